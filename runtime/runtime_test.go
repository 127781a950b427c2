package runtime_test

import (
	"context"
	stdx509 "crypto/x509"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/config"
	etcdres "github.com/nodepki/nodepki/resources/etcd"
	"github.com/nodepki/nodepki/resources/pki"
	"github.com/nodepki/nodepki/runtime"
)

var nodeAddresses = []netip.Addr{netip.MustParseAddr("10.5.0.2")}

// start runs rt until the test ends or the timeout passes.
func start(t testing.TB, rt *runtime.Runtime, timeout time.Duration) context.Context {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	done := make(chan error, 1)

	go func() { done <- rt.Run(ctx) }()

	t.Cleanup(func() {
		cancel()

		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("runtime failed: %v", err)
		}

		require.NoError(t, rt.Close())
	})

	return ctx
}

func TestRuntimeBuildsTheGraph(t *testing.T) {
	t.Parallel()

	rt, err := runtime.New(runtime.Options{Logger: zaptest.NewLogger(t), Addresses: nodeAddresses, Hostname: "node-1"})
	require.NoError(t, err)

	ctx := start(t, rt, ctest.DefaultTimeout)

	_, err = rt.MachineConfig(ctx)
	require.True(t, state.IsNotFoundError(err), "want NotFound, got %v", err)

	s := ctest.NewSecrets(t)
	raw := ctest.Marshal(t, ctest.ControlPlane(s))
	require.NoError(t, rt.SetMachineConfig(ctx, raw))

	got, err := rt.MachineConfig(ctx)
	require.NoError(t, err)
	require.Equal(t, raw, got)

	ids := []resource.ID{
		pki.CertAPI, pki.CertAPIClient, pki.CertTrustd, pki.CertEtcdServer, pki.CertEtcdPeer, pki.CertEtcdClient, pki.CertEtcdAdmin,
		pki.CertKubeAPIServer, pki.CertKubeAPIServerKubeletClient, pki.CertFrontProxyClient,
	}

	rtestutils.AssertResources(ctx, t, rt.State(), ids, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateValid, res.TypedSpec().State)
		a.True(res.TypedSpec().Trusted)
	})
	rtestutils.AssertResource(ctx, t, rt.State(), pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal([]string{"node-1"}, res.TypedSpec().DNSNames)
		a.Equal([]string{"10.5.0.2"}, res.TypedSpec().IPAddresses)
	})

	// The same config again writes nothing.
	before, err := safe.StateGetByID[*pki.NodeCertificate](ctx, rt.State(), pki.CertAPI)
	require.NoError(t, err)
	require.NoError(t, rt.SetMachineConfig(ctx, raw))

	after, err := safe.StateGetByID[*pki.NodeCertificate](ctx, rt.State(), pki.CertAPI)
	require.NoError(t, err)
	require.Equal(t, before.Metadata().Version(), after.Metadata().Version())
}

// TestRuntimeLifetimes patches machine.certificateLifetimes.etcd to 30 s on a running node: the
// etcd leaves are reissued with the new lifetime and renewed again before they expire, with no
// restart. It runs in a synctest bubble, so the 30 s pass on the fake clock.
func TestRuntimeLifetimes(t *testing.T) {
	t.Parallel()

	synctest.Test(t, func(t *testing.T) {
		rt, err := runtime.New(runtime.Options{Addresses: nodeAddresses, Hostname: "node-1"})
		require.NoError(t, err)

		ctx := start(t, rt, 10*time.Minute)

		cfg, err := machineconfig.Parse(ctest.Marshal(t, ctest.ControlPlane(ctest.NewSecrets(t))))
		require.NoError(t, err)
		require.NoError(t, cfg.Validate())

		raw, err := cfg.Bytes()
		require.NoError(t, err)
		require.NoError(t, rt.SetMachineConfig(ctx, raw))

		etcd := []resource.ID{pki.CertEtcdServer, pki.CertEtcdPeer, pki.CertEtcdClient, pki.CertEtcdAdmin}
		lifetimeOf := func(spec *pki.NodeCertificateSpec) (*stdx509.Certificate, time.Duration) {
			crt, err := certs.ParseCertificate([]byte(spec.Certificate))
			if err != nil {
				return nil, 0
			}

			return crt, crt.NotAfter.Sub(crt.NotBefore.Add(certs.Backdate))
		}

		rtestutils.AssertResources(ctx, t, rt.State(), etcd, func(res *pki.NodeCertificate, a *assert.Assertions) {
			_, lifetime := lifetimeOf(res.TypedSpec())
			a.Equal(machineconfig.DefaultEtcdLifetime, lifetime)
		})

		patch, err := machineconfig.LoadPatch([]byte("machine:\n  certificateLifetimes:\n    etcd: 30s\n"))
		require.NoError(t, err)

		cfg, err = machineconfig.Apply(cfg, patch)
		require.NoError(t, err)
		require.NoError(t, cfg.Validate())

		raw, err = cfg.Bytes()
		require.NoError(t, err)
		require.NoError(t, rt.SetMachineConfig(ctx, raw))

		first := map[resource.ID]*stdx509.Certificate{}

		rtestutils.AssertResources(ctx, t, rt.State(), etcd, func(res *pki.NodeCertificate, a *assert.Assertions) {
			crt, lifetime := lifetimeOf(res.TypedSpec())
			if a.Equal(30*time.Second, lifetime) {
				first[res.Metadata().ID()] = crt
			}
		})

		// Renewed again at 2/3 of the 30 s, by the clock alone, before they expire.
		rtestutils.AssertResources(ctx, t, rt.State(), etcd, func(res *pki.NodeCertificate, a *assert.Assertions) {
			crt, lifetime := lifetimeOf(res.TypedSpec())
			if a.NotNil(crt) && a.NotEqual(first[res.Metadata().ID()].SerialNumber, crt.SerialNumber, "not renewed yet") {
				a.Equal(30*time.Second, lifetime)
				a.True(crt.NotBefore.Add(certs.Backdate).Before(first[res.Metadata().ID()].NotAfter), "renewed only after the previous one expired")
			}
		})

		rtestutils.AssertResources(ctx, t, rt.State(), etcd, func(res *pki.CertificateStatus, a *assert.Assertions) {
			a.Equal(pki.StateValid, res.TypedSpec().State)
		})
	})
}

// TestRuntimeEveryTypeHasOneOwner: each resource type is the output of exactly one controller,
// except the machine config and the etcd bootstrap request, which are user input (the node API
// writes them).
func TestRuntimeEveryTypeHasOneOwner(t *testing.T) {
	t.Parallel()

	// With a state directory, an etcd and a kube-apiserver binary, so that the controllers that
	// write files and supervise etcd and kube-apiserver are registered too (nothing runs: the
	// runtime is not started).
	rt, err := runtime.New(runtime.Options{
		Hostname: "node-1", StateDir: filepath.Join(t.TempDir(), "state"),
		Addresses: []netip.Addr{netip.MustParseAddr("127.0.50.9")}, EtcdBinary: "/nonexistent/etcd",
		KubeAPIServerBinary: "/nonexistent/kube-apiserver",
	})
	require.NoError(t, err)

	t.Cleanup(func() { require.NoError(t, rt.Close()) })

	graph, err := rt.DependencyGraph()
	require.NoError(t, err)

	owners := map[resource.Type][]string{}

	for _, edge := range graph.Edges {
		if edge.EdgeType == controller.EdgeOutputExclusive || edge.EdgeType == controller.EdgeOutputShared {
			owners[edge.ResourceType] = append(owners[edge.ResourceType], edge.ControllerName)
		}
	}

	for _, def := range resources.Definitions() {
		typ := def.ResourceDefinition().Type
		if typ == config.MachineConfigType || typ == etcdres.BootstrapType {
			assert.Empty(t, owners[typ], "%s is user input", typ)

			continue
		}

		assert.Len(t, owners[typ], 1, "%s is written by %v", typ, owners[typ])
	}
}

func TestRuntimePersistence(t *testing.T) {
	t.Parallel()

	dir := filepath.Join(t.TempDir(), "state")
	raw := ctest.Marshal(t, ctest.Worker(ctest.NewSecrets(t)))

	rt, err := runtime.New(runtime.Options{StateDir: dir, Hostname: "node-1"})
	require.NoError(t, err)
	require.NoError(t, rt.SetMachineConfig(t.Context(), raw))
	require.NoError(t, rt.Close())

	assertMode(t, dir, 0o700)
	assertMode(t, filepath.Join(dir, runtime.StateFile), 0o600)

	// Too open permissions are tightened on the next start.
	require.NoError(t, os.Chmod(dir, 0o755))
	require.NoError(t, os.Chmod(filepath.Join(dir, runtime.StateFile), 0o644))

	rt, err = runtime.New(runtime.Options{StateDir: dir, Hostname: "node-1"})
	require.NoError(t, err)

	ctx := start(t, rt, ctest.DefaultTimeout)

	got, err := rt.MachineConfig(ctx)
	require.NoError(t, err)
	require.Equal(t, raw, got)

	assertMode(t, dir, 0o700)
	assertMode(t, filepath.Join(dir, runtime.StateFile), 0o600)

	// Derived resources are rebuilt from the persisted config.
	rtestutils.AssertResource(ctx, t, rt.State(), pki.RootOS, func(res *pki.RootSecret, a *assert.Assertions) {
		a.Empty(res.TypedSpec().IssuingKey)
		a.NotEmpty(res.TypedSpec().IssuingCert)
	})
}

// TestRuntimePersistsMembers restarts a control plane: the members it recorded (itself and a
// worker trustd signed for) are still there, and its own lastSeen is not renewed before its time.
func TestRuntimePersistsMembers(t *testing.T) {
	t.Parallel()

	dir := filepath.Join(t.TempDir(), "state")
	// Certificates are issued with this clock too: it must be within the fresh CAs' validity.
	seen := time.Now().UTC().Truncate(time.Second)
	worker := cluster.MemberSpec{Addresses: []string{"10.5.0.7"}, Hostname: "worker-1", MachineType: "worker", LastSeen: "2025-03-01T00:00:00Z"}

	rt, err := runtime.New(runtime.Options{StateDir: dir, Addresses: nodeAddresses, Hostname: "cp-1", Clock: func() time.Time { return seen }})
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), ctest.DefaultTimeout)
	done := make(chan error, 1)

	go func() { done <- rt.Run(ctx) }()

	require.NoError(t, rt.SetMachineConfig(ctx, ctest.Marshal(t, ctest.ControlPlane(ctest.NewSecrets(t)))))
	require.NoError(t, safe.StateModify(ctx, rt.State(), cluster.NewMember("10.5.0.7"), func(m *cluster.Member) error {
		*m.TypedSpec() = worker

		return nil
	}, state.WithUpdateOwner("trustd")))

	rtestutils.AssertResource(ctx, t, rt.State(), "10.5.0.2", func(m *cluster.Member, a *assert.Assertions) {
		a.Equal(seen.Format(time.RFC3339), m.TypedSpec().LastSeen)
	})

	cancel()
	require.NoError(t, <-done)
	require.NoError(t, rt.Close())

	rt, err = runtime.New(runtime.Options{StateDir: dir, Addresses: nodeAddresses, Hostname: "cp-1", Clock: func() time.Time { return seen.Add(time.Hour) }})
	require.NoError(t, err)

	ctx = start(t, rt, ctest.DefaultTimeout)

	// The certificates are issued again from the persisted config, so the controllers have run.
	rtestutils.AssertResource(ctx, t, rt.State(), pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateValid, res.TypedSpec().State)
	})

	members, err := safe.StateListAll[*cluster.Member](ctx, rt.State())
	require.NoError(t, err)
	require.Equal(t, 2, members.Len())

	self, ok := members.Find(func(m *cluster.Member) bool { return m.Metadata().ID() == "10.5.0.2" })
	require.True(t, ok)
	assert.Equal(t, cluster.MemberSpec{
		Addresses: []string{"10.5.0.2"}, Hostname: "cp-1", MachineType: "controlplane", LastSeen: seen.Format(time.RFC3339),
	}, *self.TypedSpec())

	other, ok := members.Find(func(m *cluster.Member) bool { return m.Metadata().ID() == "10.5.0.7" })
	require.True(t, ok)
	assert.Equal(t, worker, *other.TypedSpec())
	assert.Equal(t, "trustd", other.Metadata().Owner())
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()

	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, want, info.Mode().Perm(), "mode of %s", path)
}

func TestRuntimeStateDirUnusable(t *testing.T) {
	t.Parallel()

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))

	_, err := runtime.New(runtime.Options{StateDir: file, Hostname: "node-1"})
	require.ErrorContains(t, err, "error creating state directory")
}

// rotationConfigs are two control plane configs that differ in the issuer of every CA root:
// a issues with the first set of CAs and accepts the second, b the other way round.
func rotationConfigs(tb testing.TB) (a, b []byte, issuerA, issuerB map[resource.ID]string) {
	tb.Helper()

	s := ctest.NewSecrets(tb)
	next := ctest.Secrets{
		OS:         ctest.NewCA(tb, certs.RootOS),
		Kubernetes: ctest.NewCA(tb, certs.RootKubernetes),
		Etcd:       ctest.NewCA(tb, certs.RootEtcd),
		Aggregator: ctest.NewCA(tb, certs.RootAggregator),
	}

	build := func(issuing, accepted ctest.Secrets) ([]byte, map[resource.ID]string) {
		doc := ctest.ControlPlane(s)
		doc.Machine.CA, doc.Machine.AcceptedCAs = issuing.OS.Pair(), []*machineconfig.Certificate{accepted.OS.Accepted()}
		doc.Cluster.CA, doc.Cluster.AcceptedCAs = issuing.Kubernetes.Pair(), []*machineconfig.Certificate{accepted.Kubernetes.Accepted()}
		doc.Cluster.Etcd.CA, doc.Cluster.Etcd.AcceptedCAs = issuing.Etcd.Pair(), []*machineconfig.Certificate{accepted.Etcd.Accepted()}
		doc.Cluster.AggregatorCA, doc.Cluster.AcceptedAggregatorCAs = issuing.Aggregator.Pair(), []*machineconfig.Certificate{accepted.Aggregator.Accepted()}

		return ctest.Marshal(tb, doc), map[resource.ID]string{
			pki.RootOS:         issuing.OS.Fingerprint(tb),
			pki.RootKubernetes: issuing.Kubernetes.Fingerprint(tb),
			pki.RootEtcd:       issuing.Etcd.Fingerprint(tb),
			pki.RootAggregator: issuing.Aggregator.Fingerprint(tb),
		}
	}

	a, issuerA = build(*s, next)
	b, issuerB = build(next, *s)

	return a, b, issuerA, issuerB
}

// reissueWaiter follows NodeCertificates and CertificateStatuses and tells when every certificate
// is issued by the expected CA of its root and its status reflects that.
type reissueWaiter struct {
	events       chan state.Event
	certificates map[resource.ID]*pki.NodeCertificateSpec
	statuses     map[resource.ID]*pki.CertificateStatusSpec
}

const controlPlaneCertificateCount = 10

func newReissueWaiter(ctx context.Context, tb testing.TB, st state.State) *reissueWaiter {
	tb.Helper()

	w := &reissueWaiter{
		events:       make(chan state.Event, 256),
		certificates: map[resource.ID]*pki.NodeCertificateSpec{},
		statuses:     map[resource.ID]*pki.CertificateStatusSpec{},
	}

	require.NoError(tb, st.WatchKind(ctx, pki.NewNodeCertificate("").Metadata(), w.events, state.WithBootstrapContents(true)))
	require.NoError(tb, st.WatchKind(ctx, pki.NewCertificateStatus("").Metadata(), w.events, state.WithBootstrapContents(true)))

	return w
}

func (w *reissueWaiter) wait(ctx context.Context, tb testing.TB, issuers map[resource.ID]string) {
	tb.Helper()

	for !w.done(issuers) {
		select {
		case <-ctx.Done():
			tb.Fatalf("timeout waiting for reissue: %v", ctx.Err())
		case ev := <-w.events:
			switch ev.Type {
			case state.Errored:
				tb.Fatalf("watch failed: %v", ev.Error)
			case state.Created, state.Updated:
				switch res := ev.Resource.(type) {
				case *pki.NodeCertificate:
					w.certificates[res.Metadata().ID()] = res.TypedSpec()
				case *pki.CertificateStatus:
					w.statuses[res.Metadata().ID()] = res.TypedSpec()
				}
			case state.Destroyed:
				delete(w.certificates, ev.Resource.Metadata().ID())
				delete(w.statuses, ev.Resource.Metadata().ID())
			case state.Bootstrapped, state.Noop:
			}
		}
	}
}

func (w *reissueWaiter) done(issuers map[resource.ID]string) bool {
	if len(w.certificates) != controlPlaneCertificateCount || len(w.statuses) != controlPlaneCertificateCount {
		return false
	}

	for id, crt := range w.certificates {
		status, ok := w.statuses[id]
		if !ok || crt.IssuerFingerprint != issuers[crt.Root] || status.IssuerFingerprint != issuers[crt.Root] ||
			!status.Trusted || status.State != pki.StateValid {
			return false
		}
	}

	return true
}

func TestRuntimeReissuesOnIssuerSwitch(t *testing.T) {
	t.Parallel()

	rt, err := runtime.New(runtime.Options{Addresses: nodeAddresses, Hostname: "node-1"})
	require.NoError(t, err)

	ctx := start(t, rt, ctest.DefaultTimeout)
	a, b, issuerA, issuerB := rotationConfigs(t)
	w := newReissueWaiter(ctx, t, rt.State())

	for _, step := range []struct {
		raw     []byte
		issuers map[resource.ID]string
	}{{a, issuerA}, {b, issuerB}, {a, issuerA}} {
		require.NoError(t, rt.SetMachineConfig(ctx, step.raw))
		w.wait(ctx, t, step.issuers)
	}
}

// BenchmarkConfigUpdateReissue measures one node applying a config that switches the issuer of
// all four CA roots, until every certificate is reissued and every status reflects it. Compare
// with controllers/pki.BenchmarkIssueLeaves, the cryptographic floor of the same work.
func BenchmarkConfigUpdateReissue(b *testing.B) {
	rt, err := runtime.New(runtime.Options{Addresses: nodeAddresses, Hostname: "node-1"})
	require.NoError(b, err)

	ctx := start(b, rt, 10*time.Minute)
	configA, configB, issuerA, issuerB := rotationConfigs(b)
	w := newReissueWaiter(ctx, b, rt.State())

	require.NoError(b, rt.SetMachineConfig(ctx, configA))
	w.wait(ctx, b, issuerA)

	configs := [][]byte{configB, configA}
	issuers := []map[resource.ID]string{issuerB, issuerA}
	i := 0

	b.ReportAllocs()

	reportCPU := ctest.CPUPerOp(b)

	for b.Loop() {
		require.NoError(b, rt.SetMachineConfig(ctx, configs[i%2]))
		w.wait(ctx, b, issuers[i%2])

		i++
	}

	reportCPU()
}
