package pki_test

import (
	"context"
	stdx509 "crypto/x509"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
	"github.com/nodepki/nodepki/runtime/trustd"
)

const workerHostname = "worker-1"

// trustdControlPlane is the state a control plane's trustd reads: the os root with its key and
// the join token, the accepted OS CAs and trustd's own server certificate for 127.0.0.1.
type trustdControlPlane struct {
	state state.State
	// lifetime of the certificates trustd signs; zero for trustd's default.
	lifetime time.Duration
}

func newTrustdControlPlane(t *testing.T, s *ctest.Secrets) *trustdControlPlane {
	t.Helper()

	cp := &trustdControlPlane{state: state.WrapCore(namespaced.NewState(inmem.Build))}
	cp.setOSRoot(t, s.OS, []ctest.CA{s.OS}, s.Token)

	ca, err := certs.LoadCA(s.OS.Crt, s.OS.Key)
	require.NoError(t, err)

	crtPEM, keyPEM, err := ca.Issue(certs.Profile{
		CommonName:  "trustd",
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    stdx509.KeyUsageDigitalSignature,
		ExtKeyUsage: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth},
		Lifetime:    time.Hour,
	}, time.Now())
	require.NoError(t, err)

	crt := pki.NewNodeCertificate(pki.CertTrustd)
	crt.TypedSpec().Certificate, crt.TypedSpec().Key = string(crtPEM), string(keyPEM)
	require.NoError(t, cp.state.Create(t.Context(), crt))

	return cp
}

// setOSRoot makes issuing the control plane's OS CA, accepting the given CAs (issuing last).
func (cp *trustdControlPlane) setOSRoot(t *testing.T, issuing ctest.CA, accepted []ctest.CA, token string) {
	t.Helper()

	require.NoError(t, safe.StateModify(t.Context(), cp.state, pki.NewRootSecret(pki.RootOS), func(root *pki.RootSecret) error {
		*root.TypedSpec() = pki.RootSecretSpec{IssuingCert: string(issuing.Crt), IssuingKey: string(issuing.Key), Tokens: []string{token}}

		return nil
	}))

	require.NoError(t, safe.StateModify(t.Context(), cp.state, pki.NewAcceptedCA(pki.RootOS), func(pool *pki.AcceptedCA) error {
		*pool.TypedSpec() = acceptedSpec(t, accepted)

		return nil
	}))
}

// serve runs trustd on addr ("127.0.0.1:0" for any port) until stop is called or the test ends.
func (cp *trustdControlPlane) serve(t *testing.T, addr string) (boundAddr string, stop func()) {
	t.Helper()

	srv, err := trustd.New(trustd.Options{State: cp.state, Logger: zaptest.NewLogger(t).Named("trustd"), Lifetime: cp.lifetime})
	require.NoError(t, err)

	lis, err := net.Listen("tcp", addr)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)

	go func() { served <- srv.Serve(ctx, lis) }()

	var stopped atomic.Bool

	stop = func() {
		if stopped.CompareAndSwap(false, true) {
			cancel()
			assert.NoError(t, <-served)
		}
	}
	t.Cleanup(stop)

	readyCtx, readyCancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer readyCancel()

	require.NoError(t, srv.WaitReady(readyCtx))

	return lis.Addr().String(), stop
}

func acceptedSpec(t *testing.T, cas []ctest.CA) pki.AcceptedCASpec {
	t.Helper()

	var spec pki.AcceptedCASpec

	for _, ca := range cas {
		spec.Certificates = append(spec.Certificates, string(ca.Crt))
		spec.Fingerprints = append(spec.Fingerprints, ca.Fingerprint(t))
	}

	spec.IssuingFingerprint = cas[len(cas)-1].Fingerprint(t)

	return spec
}

// startWorker runs the controller with the inputs of a worker of the cluster: os root without
// key, accepted OS CAs and the api SANs. The machine config's control plane endpoint is
// 127.0.0.1, so its trustd endpoint is 127.0.0.1:50001, where nothing of this test listens.
func startWorker(t *testing.T, s *ctest.Secrets, endpoints []string, sans pki.CertSANSpec) *ctest.Env {
	t.Helper()

	env := ctest.Run(t, &ctrlpki.WorkerAPICertificateController{
		Hostname:        workerHostname,
		TrustdEndpoints: endpoints,
		RetryMin:        20 * time.Millisecond,
		RetryMax:        200 * time.Millisecond,
	})

	doc := ctest.Worker(s)
	doc.Cluster.ControlPlane.Endpoint = "https://127.0.0.1:6443"
	env.SetMachineConfig(t, doc)

	root := pki.NewRootSecret(pki.RootOS)
	*root.TypedSpec() = pki.RootSecretSpec{IssuingCert: string(s.OS.Crt), Tokens: []string{s.Token}}
	require.NoError(t, env.State.Create(env.Ctx, root))

	pool := pki.NewAcceptedCA(pki.RootOS)
	*pool.TypedSpec() = acceptedSpec(t, []ctest.CA{s.OS})
	require.NoError(t, env.State.Create(env.Ctx, pool))

	setSANs(t, env, sans)

	return env
}

func setSANs(t *testing.T, env *ctest.Env, sans pki.CertSANSpec) {
	t.Helper()

	require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewCertSAN(pki.SANsAPI), func(res *pki.CertSAN) error {
		*res.TypedSpec() = sans

		return nil
	}))
}

// assertIssued waits for an api certificate for the SANs, issued by the issuing CA and trusted
// through the accepted CAs, and returns it.
func assertIssued(t *testing.T, env *ctest.Env, sans pki.CertSANSpec, issuing ctest.CA, accepted []ctest.CA) pki.NodeCertificateSpec {
	t.Helper()

	var got pki.NodeCertificateSpec

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.NodeCertificate, a *assert.Assertions) {
		spec := res.TypedSpec()
		if !a.Empty(spec.LastError) || !a.NotEmpty(spec.Certificate) {
			return
		}

		crt, err := certs.ParseCertificate([]byte(spec.Certificate))
		if !a.NoError(err) {
			return
		}

		if !a.Equal(sans.DNSNames, crt.DNSNames) || !a.Equal(sans.IPs, ipStrings(crt.IPAddresses)) {
			return
		}

		a.Equal(workerHostname, crt.Subject.CommonName)
		a.Empty(crt.Subject.Organization)
		a.Equal([]stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}, crt.ExtKeyUsage)

		roots := stdx509.NewCertPool()
		roots.AppendCertsFromPEM(issuing.Crt)

		_, err = crt.Verify(stdx509.VerifyOptions{Roots: roots, KeyUsages: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}})
		a.NoError(err, "the certificate must chain to the issuing OS CA")

		key, err := certs.ParsePrivateKey([]byte(spec.Key))
		if a.NoError(err) {
			a.True(certs.KeyMatchesCertificate(crt, key), "the key must be the certificate's")
		}

		a.Equal(string(pki.RootOS), spec.Root)
		a.Equal(issuing.Fingerprint(t), spec.IssuerFingerprint)
		a.Equal(strings.Join(acceptedSpec(t, accepted).Certificates, ""), spec.CABundle, "the CA bundle is trustd's")
		a.NotEmpty(spec.Request)

		renewAt, err := time.Parse(time.RFC3339, spec.RenewAt)
		if a.NoError(err) {
			a.True(renewAt.After(crt.NotBefore) && renewAt.Before(crt.NotAfter), "RenewAt %s must be within the certificate's life", renewAt)
		}

		a.Equal("pki.WorkerAPICertificateController", res.Metadata().Owner())

		got = *spec
	})

	return got
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}

	return out
}

func TestWorkerAPICertificate(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	cp := newTrustdControlPlane(t, s)
	addr, _ := cp.serve(t, "127.0.0.1:0")

	sans := pki.CertSANSpec{IPs: []string{"10.5.0.3"}, DNSNames: []string{workerHostname}}
	env := startWorker(t, s, []string{addr}, sans)

	first := assertIssued(t, env, sans, s.OS, []ctest.CA{s.OS})

	// New SANs: a new certificate for them.
	sans = pki.CertSANSpec{IPs: []string{"10.5.0.3", "10.5.0.4"}, DNSNames: []string{workerHostname, "worker-1.example.test"}}
	setSANs(t, env, sans)

	second := assertIssued(t, env, sans, s.OS, []ctest.CA{s.OS})
	assert.NotEqual(t, first.Certificate, second.Certificate)
	assert.NotEqual(t, first.Request, second.Request)

	// CA rotation: the cluster issues with a new OS CA and still accepts the old one; once the
	// worker's accepted CAs end with the new CA, it asks for a certificate from it.
	newOS := ctest.NewCA(t, certs.RootOS)
	rotated := []ctest.CA{s.OS, newOS}
	cp.setOSRoot(t, newOS, rotated, s.Token)

	require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewAcceptedCA(pki.RootOS), func(pool *pki.AcceptedCA) error {
		*pool.TypedSpec() = acceptedSpec(t, rotated)

		return nil
	}))

	assertIssued(t, env, sans, newOS, rotated)

	// The node becomes a control plane: it issues "api" itself, so the trustd one goes away.
	require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewRootSecret(pki.RootOS), func(root *pki.RootSecret) error {
		root.TypedSpec().IssuingCert, root.TypedSpec().IssuingKey = string(newOS.Crt), string(newOS.Key)

		return nil
	}))

	rtestutils.AssertNoResource[*pki.NodeCertificate](env.Ctx, t, env.State, pki.CertAPI)
}

func TestWorkerAPICertificateRenewsAtRenewAt(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	cp := newTrustdControlPlane(t, s)
	cp.lifetime = 4 * time.Second // renewed about 2.5 s after issuance
	addr, _ := cp.serve(t, "127.0.0.1:0")

	sans := pki.CertSANSpec{IPs: []string{"10.5.0.3"}, DNSNames: []string{workerHostname}}
	env := startWorker(t, s, []string{addr}, sans)

	first := assertIssued(t, env, sans, s.OS, []ctest.CA{s.OS})

	renewAt, err := time.Parse(time.RFC3339, first.RenewAt)
	require.NoError(t, err)

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.NodeCertificate, a *assert.Assertions) {
		a.NotEqual(first.Certificate, res.TypedSpec().Certificate, "no input changed: only the renewal timer can reissue")
		a.Empty(res.TypedSpec().LastError)
	})

	assert.False(t, time.Now().Before(renewAt), "renewed before RenewAt %s", renewAt)

	assertIssued(t, env, sans, s.OS, []ctest.CA{s.OS})
}

func TestWorkerAPICertificateLeavesControlPlaneCertificate(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := ctest.Run(t, &ctrlpki.WorkerAPICertificateController{Hostname: workerHostname})

	root := pki.NewRootSecret(pki.RootOS)
	*root.TypedSpec() = pki.RootSecretSpec{IssuingCert: string(s.OS.Crt), IssuingKey: string(s.OS.Key), Tokens: []string{s.Token}}
	require.NoError(t, env.State.Create(env.Ctx, root))

	pool := pki.NewAcceptedCA(pki.RootOS)
	*pool.TypedSpec() = acceptedSpec(t, []ctest.CA{s.OS})
	require.NoError(t, env.State.Create(env.Ctx, pool))

	setSANs(t, env, pki.CertSANSpec{IPs: []string{"10.5.0.2"}})

	theirs := pki.NewNodeCertificate(pki.CertAPI)
	theirs.TypedSpec().Certificate = "issued by the control plane"
	require.NoError(t, env.State.Create(env.Ctx, theirs, state.WithCreateOwner("pki.NodeCertificatesController")))

	// There is no signal for "reconciled and did nothing": change an input and give the
	// controller time to act on it wrongly.
	setSANs(t, env, pki.CertSANSpec{IPs: []string{"10.5.0.2", "10.5.0.3"}})
	time.Sleep(200 * time.Millisecond)

	got, err := safe.StateGetByID[*pki.NodeCertificate](env.Ctx, env.State, pki.CertAPI)
	require.NoError(t, err)
	assert.Equal(t, "pki.NodeCertificatesController", got.Metadata().Owner())
	assert.Equal(t, theirs.Metadata().Version(), got.Metadata().Version())
	assert.Equal(t, "issued by the control plane", got.TypedSpec().Certificate)
}

func TestWorkerAPICertificateRetriesUntilTrustdStarts(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	cp := newTrustdControlPlane(t, s)

	// Until trustd starts, its address refuses every TLS handshake; count the attempts.
	down, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	addr := down.Addr().String()

	var attempts atomic.Int64

	downDone := make(chan struct{})

	go func() {
		defer close(downDone)

		for {
			conn, err := down.Accept()
			if err != nil {
				return
			}

			attempts.Add(1)
			conn.Close() //nolint:errcheck
		}
	}()

	sans := pki.CertSANSpec{IPs: []string{"10.5.0.3"}, DNSNames: []string{workerHostname}}
	env := startWorker(t, s, []string{addr}, sans)

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.NodeCertificate, a *assert.Assertions) {
		a.Empty(res.TypedSpec().Certificate)
		a.Equal(string(pki.RootOS), res.TypedSpec().Root)
		a.Contains(res.TypedSpec().LastError, addr, "the error names the explicit endpoint")
		a.Contains(res.TypedSpec().LastError, "127.0.0.1:50001", "the error names the control plane endpoint")
		a.NotContains(res.TypedSpec().LastError, s.Token)
	})

	require.Eventually(t, func() bool { return attempts.Load() >= 3 }, 10*time.Second, 10*time.Millisecond,
		"the controller must keep retrying while trustd is down")

	require.NoError(t, down.Close())
	<-downDone

	_, stop := cp.serve(t, addr)

	first := assertIssued(t, env, sans, s.OS, []ctest.CA{s.OS})

	// trustd goes down again while the SANs change: the error is published and the still valid
	// certificate is kept; when trustd is back the certificate for the new SANs arrives.
	stop()

	newSANs := pki.CertSANSpec{IPs: []string{"10.5.0.3", "10.5.0.9"}, DNSNames: []string{workerHostname}}
	setSANs(t, env, newSANs)

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.NodeCertificate, a *assert.Assertions) {
		a.NotEmpty(res.TypedSpec().LastError)
		a.Equal(first.Certificate, res.TypedSpec().Certificate, "the previous certificate must be kept")
		a.Equal(first.Key, res.TypedSpec().Key)
	})

	cp.serve(t, addr)

	assertIssued(t, env, newSANs, s.OS, []ctest.CA{s.OS})
}
