package trustd_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
	"github.com/nodepki/nodepki/runtime/trustd"
)

const (
	machineToken  = "abcdef.0123456789abcdef"
	acceptedToken = "ghijkl.0123456789ghijkl"
)

// controlPlane is the state a control-plane node would hold, with its OS CA.
type controlPlane struct {
	state state.State
	ca    *certs.CA
	// accepted is the AcceptedCA os bundle: an older accepted CA, then the issuing CA.
	accepted []string
}

// newControlPlane builds an inmem state with RootSecret os, AcceptedCA os and the trustd server
// certificate for 127.0.0.1, issued by a fresh CA of the given root kind (os: Ed25519, etcd: ECDSA).
func newControlPlane(t testing.TB, caKind string) *controlPlane {
	t.Helper()

	ctx := t.Context()
	ca := newCA(t, caKind)
	oldCA := newCA(t, caKind)

	cp := &controlPlane{
		state:    state.WrapCore(namespaced.NewState(inmem.Build)),
		ca:       ca,
		accepted: []string{string(oldCA.CrtPEM), string(ca.CrtPEM)},
	}

	root := pki.NewRootSecret(pki.RootOS)
	root.TypedSpec().IssuingCert = string(ca.CrtPEM)
	root.TypedSpec().IssuingKey = string(ca.KeyPEM)
	root.TypedSpec().Tokens = []string{machineToken, acceptedToken}
	require.NoError(t, cp.state.Create(ctx, root))

	accepted := pki.NewAcceptedCA(pki.RootOS)
	accepted.TypedSpec().Certificates = cp.accepted
	require.NoError(t, cp.state.Create(ctx, accepted))

	crt := pki.NewNodeCertificate(pki.CertTrustd)
	crt.TypedSpec().Root = string(pki.RootOS)
	crt.TypedSpec().Certificate, crt.TypedSpec().Key = issueServerCert(t, ca)
	require.NoError(t, cp.state.Create(ctx, crt))

	return cp
}

func newCA(t testing.TB, kind string) *certs.CA {
	t.Helper()

	crtPEM, keyPEM, err := certs.NewRootCA(kind)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crtPEM, keyPEM)
	require.NoError(t, err)

	return ca
}

func issueServerCert(t testing.TB, ca *certs.CA) (crtPEM, keyPEM string) {
	t.Helper()

	crt, key, err := ca.Issue(certs.Profile{
		CommonName:  "trustd",
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		Lifetime:    time.Hour,
	}, time.Now())
	require.NoError(t, err)

	return string(crt), string(key)
}

// startServer runs a trustd server on 127.0.0.1 until the test ends and returns its address.
func startServer(t *testing.T, st state.State, logger *zap.Logger) string {
	t.Helper()

	if logger == nil {
		logger = zaptest.NewLogger(t)
	}

	srv, err := trustd.New(trustd.Options{State: st, Logger: logger})
	require.NoError(t, err)

	return serve(t, srv)
}

func serve(t testing.TB, srv *trustd.Server) string {
	t.Helper()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)

	go func() { served <- srv.Serve(ctx, lis) }()

	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-served, "Serve must return nil after a graceful stop")
	})

	readyCtx, readyCancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer readyCancel()

	require.NoError(t, srv.WaitReady(readyCtx))

	return lis.Addr().String()
}

type csrRequest struct {
	key          crypto.Signer
	commonName   string
	organization []string
	dnsNames     []string
	ips          []string
}

func makeCSR(t testing.TB, req csrRequest) []byte {
	t.Helper()

	key := req.key
	if key == nil {
		key = newEd25519Key(t)
	}

	template := &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: req.commonName, Organization: req.organization},
		DNSNames: req.dnsNames,
	}

	for _, ip := range req.ips {
		template.IPAddresses = append(template.IPAddresses, net.ParseIP(ip))
	}

	der, err := x509.CreateCertificateRequest(rand.Reader, template, key)
	require.NoError(t, err)

	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func newEd25519Key(t testing.TB) crypto.Signer {
	t.Helper()

	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	return key
}

func newECDSAKey(t *testing.T) crypto.Signer {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)

	return key
}

func bundle(certificates []string) []byte {
	var out []byte

	for _, crt := range certificates {
		out = append(out, crt...)
	}

	return out
}
