package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/cosi-project/runtime/pkg/state/protobuf/client"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/resources"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/network"
	"github.com/nodepki/nodepki/resources/pki"
)

const testClusterName = "apitest"

// testPKI is one cluster's secrets: the OS CA, the Kubernetes CA with an older one still
// accepted, and the generated machine configs.
type testPKI struct {
	osCA         *certs.CA
	k8sCA        *certs.CA
	oldK8sCA     *certs.CA
	controlPlane []byte
	worker       []byte
}

var sharedPKI = sync.OnceValues(func() (*testPKI, error) {
	b, err := bundle.Generate()
	if err != nil {
		return nil, err
	}

	cp, w, err := generate.Generate(generate.Input{ClusterName: testClusterName, Endpoint: "https://127.0.0.2:6443", Bundle: b})
	if err != nil {
		return nil, err
	}

	osCA, err := certs.LoadCA(b.Certs.OS.Crt, b.Certs.OS.Key)
	if err != nil {
		return nil, err
	}

	k8sCA, err := certs.LoadCA(b.Certs.K8s.Crt, b.Certs.K8s.Key)
	if err != nil {
		return nil, err
	}

	oldCrt, oldKey, err := certs.NewRootCA(certs.RootKubernetes)
	if err != nil {
		return nil, err
	}

	oldK8sCA, err := certs.LoadCA(oldCrt, oldKey)
	if err != nil {
		return nil, err
	}

	p := &testPKI{osCA: osCA, k8sCA: k8sCA, oldK8sCA: oldK8sCA}

	if p.controlPlane, err = cp.Bytes(); err != nil {
		return nil, err
	}

	if p.worker, err = w.Bytes(); err != nil {
		return nil, err
	}

	return p, nil
})

func getPKI(t *testing.T) *testPKI {
	t.Helper()

	p, err := sharedPKI()
	require.NoError(t, err)

	return p
}

// newTestCA is another, unrelated OS CA.
func newTestCA(t *testing.T) *certs.CA {
	t.Helper()

	crt, key, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(t, err)

	return ca
}

type fakeStore struct {
	mu     sync.Mutex
	raw    []byte
	writes int
}

func (f *fakeStore) MachineConfig(context.Context) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()

	return append([]byte(nil), f.raw...), nil
}

func (f *fakeStore) SetMachineConfig(_ context.Context, raw []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.raw = append([]byte(nil), raw...)
	f.writes++

	return nil
}

func (f *fakeStore) snapshot() ([]byte, int) {
	f.mu.Lock()
	defer f.mu.Unlock()

	return append([]byte(nil), f.raw...), f.writes
}

// testNode is a running node API with a hand-built state.
type testNode struct {
	addr     netip.Addr
	endpoint string
	st       state.State
	store    *fakeStore
	server   *Server
	serveErr chan error
}

type nodeSpec struct {
	addr         string
	controlPlane bool
	// lis is the listener to serve; if nil, one is opened on addr with a free port.
	lis net.Listener
	// logger replaces the test logger.
	logger *zap.Logger
	// controlPlanes is Options.ControlPlanes.
	controlPlanes []string
	// audit is Options.Audit.
	audit *audit.Log
}

func startNode(t *testing.T, p *testPKI, spec nodeSpec) *testNode {
	t.Helper()

	ctx := t.Context()
	addr := netip.MustParseAddr(spec.addr)

	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(ctx, st))

	serverCrt, serverKey := issueServerCert(t, p.osCA, addr)
	createNodeCert(t, st, pki.CertAPI, serverCrt, serverKey)

	cfg := p.worker
	rootSecret := pki.NewRootSecret(pki.RootOS)
	rootSecret.TypedSpec().IssuingCert = string(p.osCA.CrtPEM)

	if spec.controlPlane {
		cfg = p.controlPlane
		rootSecret.TypedSpec().IssuingKey = string(p.osCA.KeyPEM)

		crt, key, err := p.osCA.Issue(impersonatorProfile(), time.Now())
		require.NoError(t, err)
		createNodeCert(t, st, pki.CertAPIClient, crt, key)

		k8sRoot := pki.NewRootSecret(pki.RootKubernetes)
		k8sRoot.TypedSpec().IssuingCert = string(p.k8sCA.CrtPEM)
		k8sRoot.TypedSpec().IssuingKey = string(p.k8sCA.KeyPEM)
		require.NoError(t, st.Create(ctx, k8sRoot))

		k8sAccepted := pki.NewAcceptedCA(pki.RootKubernetes)
		k8sAccepted.TypedSpec().Certificates = []string{string(p.oldK8sCA.CrtPEM), string(p.k8sCA.CrtPEM)}
		require.NoError(t, st.Create(ctx, k8sAccepted))
	}

	require.NoError(t, st.Create(ctx, rootSecret))
	setAcceptedCAs(t, st, p.osCA)

	addresses := network.NewNodeAddresses(network.CurrentID)
	// A second address that only NodeAddresses knows: calls addressed to it are local too.
	addresses.TypedSpec().Addresses = []string{addr.String() + "/8", extraAddress(addr)}
	require.NoError(t, st.Create(ctx, addresses))

	mc := config.NewMachineConfig(config.ActiveID)
	mc.TypedSpec().Raw = cfg
	require.NoError(t, st.Create(ctx, mc))

	certStatus := pki.NewCertificateStatus(pki.CertAPI)
	certStatus.TypedSpec().Subject = "node " + addr.String()
	certStatus.TypedSpec().State = pki.StateValid
	require.NoError(t, st.Create(ctx, certStatus))

	lis := spec.lis
	if lis == nil {
		var err error

		lis, err = net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
		require.NoError(t, err)
	}

	_, portString, err := net.SplitHostPort(lis.Addr().String())
	require.NoError(t, err)

	port, err := strconv.Atoi(portString)
	require.NoError(t, err)

	store := &fakeStore{raw: cfg}

	logger := spec.logger
	if logger == nil {
		logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).With(zap.String("node", addr.String()))
	}

	srv, err := New(Options{
		State:         st,
		Config:        store,
		NodeAddress:   addr,
		Logger:        logger,
		APIPort:       port,
		ControlPlanes: spec.controlPlanes,
		Audit:         spec.audit,
	})
	require.NoError(t, err)

	n := &testNode{addr: addr, endpoint: lis.Addr().String(), st: st, store: store, server: srv, serveErr: make(chan error, 1)}

	serveCtx, cancel := context.WithCancel(context.Background())

	go func() { n.serveErr <- srv.Serve(serveCtx, lis) }()

	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-n.serveErr)
	})

	waitCtx, waitCancel := context.WithTimeout(ctx, 10*time.Second)
	defer waitCancel()

	require.NoError(t, srv.WaitReady(waitCtx))

	return n
}

// impersonatorProfile is the forwarding client certificate of a control plane.
func impersonatorProfile() certs.Profile {
	return certs.Profile{
		Organization: []string{role.Impersonator},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Lifetime:     time.Hour,
	}
}

// listenPair opens listeners on 127.0.0.2 and 127.0.0.3 with the same port, as nodes of a cluster
// have: forwarding dials the target on the forwarding node's API port.
func listenPair(t *testing.T) (a, b net.Listener) {
	t.Helper()

	for range 20 {
		la, err := net.Listen("tcp", "127.0.0.2:0")
		require.NoError(t, err)

		_, port, err := net.SplitHostPort(la.Addr().String())
		require.NoError(t, err)

		lb, err := net.Listen("tcp", net.JoinHostPort("127.0.0.3", port))
		if err == nil {
			return la, lb
		}

		la.Close()
	}

	t.Fatal("no port free on both 127.0.0.2 and 127.0.0.3")

	return nil, nil
}

func issueServerCert(t *testing.T, ca *certs.CA, addr netip.Addr) (crt, key []byte) {
	t.Helper()

	crt, key, err := ca.Issue(certs.Profile{
		CommonName:  addr.String(),
		IPAddresses: []net.IP{addr.AsSlice()},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		Lifetime:    24 * time.Hour,
	}, time.Now())
	require.NoError(t, err)

	return crt, key
}

func createNodeCert(t *testing.T, st state.State, id resource.ID, crt, key []byte) {
	t.Helper()

	nc := pki.NewNodeCertificate(id)
	nc.TypedSpec().Root = pki.RootOS
	nc.TypedSpec().Certificate = string(crt)
	nc.TypedSpec().Key = string(key)
	require.NoError(t, st.Create(t.Context(), nc))
}

func updateNodeCert(t *testing.T, st state.State, id resource.ID, crt, key []byte) {
	t.Helper()

	_, err := safe.StateUpdateWithConflicts(t.Context(), st, pki.NewNodeCertificate(id).Metadata(), func(nc *pki.NodeCertificate) error {
		nc.TypedSpec().Certificate = string(crt)
		nc.TypedSpec().Key = string(key)

		return nil
	})
	require.NoError(t, err)
}

// setAcceptedCAs creates or replaces AcceptedCAs/os with the given CAs.
func setAcceptedCAs(t *testing.T, st state.State, cas ...*certs.CA) {
	t.Helper()

	ac := pki.NewAcceptedCA(pki.RootOS)

	for _, ca := range cas {
		ac.TypedSpec().Certificates = append(ac.TypedSpec().Certificates, string(ca.CrtPEM))
		ac.TypedSpec().Fingerprints = append(ac.TypedSpec().Fingerprints, certs.Fingerprint(ca.Crt))
	}

	_, err := safe.StateUpdateWithConflicts(t.Context(), st, ac.Metadata(), func(cur *pki.AcceptedCA) error {
		*cur.TypedSpec() = *ac.TypedSpec()

		return nil
	})
	if state.IsNotFoundError(err) {
		err = st.Create(t.Context(), ac)
	}

	require.NoError(t, err)
}

// extraAddress is the IPv6 address a test node has besides its loopback one.
func extraAddress(addr netip.Addr) string {
	return "fd00::" + strconv.Itoa(int(addr.As4()[3]))
}

type clientCertSpec struct {
	roles []string
	eku   []x509.ExtKeyUsage
	// issuedAt is when the certificate was issued (default now); with lifetime it gives validity.
	issuedAt time.Time
	lifetime time.Duration
}

func issueClientCert(t *testing.T, ca *certs.CA, spec clientCertSpec) tls.Certificate {
	t.Helper()

	if spec.eku == nil {
		spec.eku = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}

	if spec.issuedAt.IsZero() {
		spec.issuedAt = time.Now()
	}

	if spec.lifetime == 0 {
		spec.lifetime = time.Hour
	}

	crt, key, err := ca.Issue(certs.Profile{
		Organization: spec.roles,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  spec.eku,
		Lifetime:     spec.lifetime,
	}, spec.issuedAt)
	require.NoError(t, err)

	pair, err := tls.X509KeyPair(crt, key)
	require.NoError(t, err)

	return pair
}

// dial connects a client with cert to endpoint, trusting the given CAs for the server certificate.
func dial(t *testing.T, endpoint string, cert tls.Certificate, trusted ...*certs.CA) *grpc.ClientConn {
	t.Helper()

	pool := x509.NewCertPool()
	for _, ca := range trusted {
		pool.AddCert(ca.Crt)
	}

	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		Certificates: []tls.Certificate{cert},
	})))
	require.NoError(t, err)

	t.Cleanup(func() { conn.Close() })

	return conn
}

func (n *testNode) dialAs(t *testing.T, p *testPKI, roles ...string) *grpc.ClientConn {
	t.Helper()

	return dial(t, n.endpoint, issueClientCert(t, p.osCA, clientCertSpec{roles: roles}), p.osCA)
}

func cosiState(conn *grpc.ClientConn) state.State {
	return state.WrapCore(client.NewAdapter(v1alpha1.NewStateClient(conn), client.WithDisableWatchRetry()))
}

func nodeClient(conn *grpc.ClientConn) node.NodeServiceClient {
	return node.NewNodeServiceClient(conn)
}

func callCtx(t *testing.T) context.Context {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)

	return ctx
}

// eventually retries f until it returns nil or the deadline passes, and fails with its last error.
func eventually(t *testing.T, f func() error) {
	t.Helper()

	deadline := time.Now().Add(10 * time.Second)

	for {
		err := f()
		if err == nil {
			return
		}

		if time.Now().After(deadline) {
			require.NoError(t, err, "condition not met in time")
		}

		time.Sleep(20 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")

func mustKeyPair(t *testing.T, crt, key []byte) tls.Certificate {
	t.Helper()

	pair, err := tls.X509KeyPair(crt, key)
	require.NoError(t, err)

	return pair
}
