package runtime_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/pki"
	"github.com/nodepki/nodepki/runtime"
)

// Addresses of this file's nodes (the issue-8 test range); trustd listens on its usual port.
var (
	controlPlaneAddress = netip.MustParseAddr("127.0.50.2")
	workerAddress       = netip.MustParseAddr("127.0.50.3")
)

// node is a running runtime.New node.
type node struct {
	rt  *runtime.Runtime
	ctx context.Context
	cfg *machineconfig.Config
}

func startNode(t *testing.T, opts runtime.Options, cfg *machineconfig.Config, patches ...string) *node {
	t.Helper()

	opts.Logger = zaptest.NewLogger(t).Named(opts.Hostname)

	rt, err := runtime.New(opts)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	done := make(chan error, 1)

	go func() { done <- rt.Run(ctx) }()

	t.Cleanup(func() {
		cancel()

		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("%s: runtime failed: %v", opts.Hostname, err)
		}

		require.NoError(t, rt.Close())
	})

	n := &node{rt: rt, ctx: ctx}
	n.apply(t, cfg, patches...)

	return n
}

// apply validates cfg and makes it the node's config, as apply-config does.
func (n *node) apply(t *testing.T, cfg *machineconfig.Config, patches ...string) {
	t.Helper()

	loaded, err := machineconfig.LoadPatches(patches)
	require.NoError(t, err)

	cfg, err = machineconfig.Apply(cfg, loaded...)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())

	raw, err := cfg.Bytes()
	require.NoError(t, err)
	require.NoError(t, n.rt.SetMachineConfig(n.ctx, raw))

	n.cfg = cfg
}

func (n *node) certificate(t *testing.T, id resource.ID) *pki.NodeCertificateSpec {
	t.Helper()

	res, err := safe.StateGetByID[*pki.NodeCertificate](n.ctx, n.rt.State(), id)
	require.NoError(t, err)

	return res.TypedSpec()
}

// TestRuntimeControlPlaneAndWorker builds a control plane and a worker with runtime.New alone, as
// an OS embedding nodepki does: the worker obtains its node API certificate from the control
// plane's real trustd over loopback, signed with the control plane's api lifetime, and both show
// every certificate and status. A worker whose renewal trustd refuses keeps its certificate and
// says so in its status.
func TestRuntimeControlPlaneAndWorker(t *testing.T) {
	t.Parallel()

	secrets, err := bundle.Generate()
	require.NoError(t, err)

	cpConfig, workerConfig, err := generate.Generate(generate.Input{
		ClusterName: "embedded",
		Endpoint:    "https://" + controlPlaneAddress.String() + ":6443",
		Bundle:      secrets,
	})
	require.NoError(t, err)

	cp := startNode(t, runtime.Options{
		Addresses: []netip.Addr{controlPlaneAddress},
		Hostname:  "cp-1",
		Trustd:    runtime.TrustdOptions{Listen: netip.AddrPortFrom(controlPlaneAddress, 50001)},
	}, cpConfig, "machine:\n  certificateLifetimes:\n    api: 2h\n")

	worker := startNode(t, runtime.Options{
		Addresses: []netip.Addr{workerAddress},
		Hostname:  "worker-1",
		Trustd:    runtime.TrustdOptions{SourceAddress: workerAddress, RetryUnit: 100 * time.Millisecond, RetryWindow: 5 * time.Second},
	}, workerConfig)

	osCA, err := certs.ParseCertificate(secrets.Certs.OS.Crt)
	require.NoError(t, err)

	controlPlaneIDs := []resource.ID{
		pki.CertAPI, pki.CertAPIClient, pki.CertTrustd, pki.CertEtcdServer, pki.CertEtcdPeer, pki.CertEtcdClient, pki.CertEtcdAdmin,
		pki.CertKubeAPIServer, pki.CertKubeAPIServerKubeletClient, pki.CertFrontProxyClient,
	}

	for _, n := range []struct {
		node *node
		ids  []resource.ID
	}{{cp, controlPlaneIDs}, {worker, []resource.ID{pki.CertAPI}}} {
		rtestutils.AssertResources(n.node.ctx, t, n.node.rt.State(), n.ids, func(res *pki.CertificateStatus, a *assert.Assertions) {
			a.Equal(pki.StateValid, res.TypedSpec().State, res.TypedSpec().LastError)
			a.True(res.TypedSpec().Trusted)
		})
		rtestutils.AssertLength[*pki.NodeCertificate](n.node.ctx, t, n.node.rt.State(), len(n.ids))
		rtestutils.AssertLength[*pki.CertificateStatus](n.node.ctx, t, n.node.rt.State(), len(n.ids))
	}

	// The worker's certificate comes from trustd: for its own address, with the control plane's
	// api lifetime, chaining to the OS CA.
	api := worker.certificate(t, pki.CertAPI)
	crt, err := certs.ParseCertificate([]byte(api.Certificate))
	require.NoError(t, err)

	assert.Equal(t, "worker-1", crt.Subject.CommonName)
	assert.Contains(t, crt.IPAddresses[0].String(), workerAddress.String())
	assert.Equal(t, 2*time.Hour, crt.NotAfter.Sub(crt.NotBefore.Add(certs.Backdate)).Round(time.Minute))
	assert.Equal(t, certs.Fingerprint(osCA), api.IssuerFingerprint)
	assert.NoError(t, crt.CheckSignatureFrom(osCA))

	rtestutils.AssertResource(cp.ctx, t, cp.rt.State(), workerAddress.String(), func(m *cluster.Member, a *assert.Assertions) {
		a.Equal("worker-1", m.TypedSpec().Hostname)
	})

	// A new api lifetime on the control plane applies to what trustd signs next, without a restart.
	cp.apply(t, cp.cfg, "machine:\n  certificateLifetimes:\n    api: 3h\n")
	rtestutils.AssertResource(cp.ctx, t, cp.rt.State(), pki.CertAPI, func(res *pki.CertificateRequest, a *assert.Assertions) {
		a.Equal(3*time.Hour, res.TypedSpec().Lifetime)
	})

	worker.apply(t, worker.cfg, "machine:\n  certSANs: [worker-1.example.test]\n")
	rtestutils.AssertResource(worker.ctx, t, worker.rt.State(), pki.CertAPI, func(res *pki.NodeCertificate, a *assert.Assertions) {
		renewed, err := certs.ParseCertificate([]byte(res.TypedSpec().Certificate))
		if a.NoError(err) && a.Contains(renewed.DNSNames, "worker-1.example.test") {
			a.Equal(3*time.Hour, renewed.NotAfter.Sub(renewed.NotBefore.Add(certs.Backdate)).Round(time.Minute))
		}
	})

	crt, err = certs.ParseCertificate([]byte(worker.certificate(t, pki.CertAPI).Certificate))
	require.NoError(t, err)

	// The control plane stops accepting the worker's token, then the worker needs a new
	// certificate (new SANs): trustd refuses, the worker keeps the one it has and says why.
	cp.apply(t, cp.cfg, "machine:\n  token: "+"zyxwvu.9876543210zyxwvu"+"\n")
	rtestutils.AssertResource(cp.ctx, t, cp.rt.State(), pki.RootOS, func(res *pki.RootSecret, a *assert.Assertions) {
		a.Equal([]string{"zyxwvu.9876543210zyxwvu"}, res.TypedSpec().Tokens)
	})

	worker.apply(t, worker.cfg, "machine:\n  certSANs: [worker-1.example.test, worker-1.example.org]\n")

	rtestutils.AssertResource(worker.ctx, t, worker.rt.State(), pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateRenewalFailing, res.TypedSpec().State)
		a.True(res.TypedSpec().Trusted)
		a.Equal(crt.SerialNumber.Text(16), res.TypedSpec().Serial, "the current certificate is kept")
		a.Contains(res.TypedSpec().LastError, "invalid join token")
	})
}

// TestRuntimeListenTrustd: a caller that knows the machine type binds trustd before Run, so a
// port in use fails at once; a worker binds nothing.
func TestRuntimeListenTrustd(t *testing.T) {
	t.Parallel()

	addr := netip.AddrPortFrom(netip.MustParseAddr("127.0.50.4"), 50001)

	taken, err := net.Listen("tcp", addr.String())
	require.NoError(t, err)

	t.Cleanup(func() { require.NoError(t, taken.Close()) })

	for _, tc := range []struct {
		name         string
		controlPlane bool
		err          string
	}{
		{name: "control plane, port in use", controlPlane: true, err: "error listening for trustd"},
		{name: "worker", controlPlane: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rt, err := runtime.New(runtime.Options{Hostname: "node-1", Trustd: runtime.TrustdOptions{Listen: addr}})
			require.NoError(t, err)

			t.Cleanup(func() { require.NoError(t, rt.Close()) })

			err = rt.ListenTrustd(tc.controlPlane)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)

				return
			}

			require.NoError(t, err)
		})
	}
}
