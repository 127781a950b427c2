package trustd_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	trustdapi "github.com/nodepki/nodepki/api/trustd"
	"github.com/nodepki/nodepki/pkg/certs"
	trustdclient "github.com/nodepki/nodepki/pkg/trustd"
	"github.com/nodepki/nodepki/resources/pki"
	"github.com/nodepki/nodepki/runtime/trustd"
)

func TestServerSignsUnderPolicy(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	core, logs := observer.New(zapcore.InfoLevel)
	addr := startServer(t, cp.state, zap.New(core))

	caPEM, crtPEM, err := trustdclient.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), machineToken, makeCSR(t, csrRequest{
		commonName:   "worker-1",
		organization: []string{"os:admin"},
		dnsNames:     []string{"worker-1", "worker-1.cluster.local"},
		ips:          []string{"10.5.0.3", "fd00::3"},
	}))
	require.NoError(t, err)

	assert.Equal(t, bundle(cp.accepted), caPEM, "ca must be the AcceptedCA os bundle")

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	assert.Equal(t, "worker-1", crt.Subject.CommonName)
	assert.Empty(t, crt.Subject.Organization, "the CSR's Organization (a role) must never be copied")
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, crt.ExtKeyUsage)
	assert.Equal(t, x509.KeyUsageDigitalSignature, crt.KeyUsage)
	assert.Equal(t, []string{"worker-1", "worker-1.cluster.local"}, crt.DNSNames)
	assert.Equal(t, "10.5.0.3", crt.IPAddresses[0].String())
	assert.Equal(t, "fd00::3", crt.IPAddresses[1].String())
	assert.LessOrEqual(t, crt.NotAfter.Sub(crt.NotBefore), trustd.CertificateLifetime+certs.Backdate)
	assert.WithinDuration(t, time.Now().Add(trustd.CertificateLifetime), crt.NotAfter, time.Minute)

	roots := x509.NewCertPool()
	roots.AddCert(cp.ca.Crt)

	_, err = crt.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, DNSName: "worker-1"})
	require.NoError(t, err, "the certificate must chain to the OS CA")

	_, err = crt.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.Error(t, err, "the certificate must not be usable as a client certificate")

	opensslVerify(t, cp.ca.CrtPEM, crtPEM)

	signed := logs.FilterMessage("trustd signed a certificate").All()
	require.Len(t, signed, 1)

	fields := signed[0].ContextMap()
	assert.Equal(t, "127.0.0.1", fields["peer"])
	assert.Equal(t, "worker-1", fields["cn"])
	assert.Equal(t, crt.SerialNumber.Text(16), fields["serial"])
	assert.Contains(t, fields, "dns_names")
	assert.Contains(t, fields, "ip_addresses")
}

// opensslVerify checks the chain with an independent implementation.
func opensslVerify(t *testing.T, caPEM, crtPEM []byte) {
	t.Helper()

	dir := t.TempDir()
	caFile, crtFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "crt.pem")
	require.NoError(t, os.WriteFile(caFile, caPEM, 0o600))
	require.NoError(t, os.WriteFile(crtFile, crtPEM, 0o600))

	out, err := exec.CommandContext(t.Context(), "openssl", "verify", "-purpose", "sslserver", "-CAfile", caFile, crtFile).CombinedOutput()
	require.NoError(t, err, "openssl verify: %s", out)
	assert.Contains(t, string(out), ": OK")
}

func TestServerRefusesBadRequests(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)

	validCSR := makeCSR(t, csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}})

	tamperedCSR := func() []byte {
		block, _ := pem.Decode(validCSR)
		der := append([]byte(nil), block.Bytes...)
		der[len(der)-1] ^= 0xff // last byte of the signature

		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()

	for _, tc := range []struct {
		name    string
		token   string
		csr     []byte
		code    codes.Code
		message string
	}{
		{
			name:    "wrong token",
			token:   "zzzzzz.zzzzzzzzzzzzzzzz",
			csr:     validCSR,
			code:    codes.Unauthenticated,
			message: "invalid join token",
		},
		{
			name:    "missing token",
			csr:     validCSR,
			code:    codes.Unauthenticated,
			message: "invalid join token",
		},
		{
			name:    "wildcard SAN",
			token:   machineToken,
			csr:     makeCSR(t, csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1", "*.cluster.local"}}),
			code:    codes.InvalidArgument,
			message: "wildcard names are not allowed",
		},
		{
			name:    "empty SAN set",
			token:   machineToken,
			csr:     makeCSR(t, csrRequest{commonName: "worker-1"}),
			code:    codes.InvalidArgument,
			message: "no SANs",
		},
		{
			name:    "malformed DNS name",
			token:   machineToken,
			csr:     makeCSR(t, csrRequest{commonName: "worker-1", dnsNames: []string{"worker_1.local"}}),
			code:    codes.InvalidArgument,
			message: `label "worker_1" has character '_'`,
		},
		{
			name:    "DNS name with an empty label",
			token:   machineToken,
			csr:     makeCSR(t, csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1..local"}}),
			code:    codes.InvalidArgument,
			message: "every label must be 1 to 63 characters",
		},
		{
			name:    "unspecified IP",
			token:   machineToken,
			csr:     makeCSR(t, csrRequest{commonName: "worker-1", ips: []string{"0.0.0.0"}}),
			code:    codes.InvalidArgument,
			message: "unspecified address",
		},
		{
			name:    "ECDSA key for an Ed25519 CA",
			token:   machineToken,
			csr:     makeCSR(t, csrRequest{key: newECDSAKey(t), commonName: "worker-1", dnsNames: []string{"worker-1"}}),
			code:    codes.InvalidArgument,
			message: "key type is ECDSA but the OS CA is Ed25519",
		},
		{
			name:    "not PEM",
			token:   machineToken,
			csr:     []byte("hello"),
			code:    codes.InvalidArgument,
			message: "csr: not PEM",
		},
		{
			name:    "PEM of another type",
			token:   machineToken,
			csr:     cp.ca.CrtPEM,
			code:    codes.InvalidArgument,
			message: `PEM block is "CERTIFICATE", want CERTIFICATE REQUEST`,
		},
		{
			name:    "bad CSR",
			token:   machineToken,
			csr:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte{0x30, 0x03, 0x01, 0x01, 0x00}}),
			code:    codes.InvalidArgument,
			message: "not a valid certificate request",
		},
		{
			name:    "bad CSR signature",
			token:   machineToken,
			csr:     tamperedCSR,
			code:    codes.InvalidArgument,
			message: "signature is invalid",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			_, err := rawCertificate(t, addr, bundle(cp.accepted), tc.token, tc.csr)
			require.Error(t, err)

			st := status.Convert(err)
			assert.Equal(t, tc.code, st.Code(), st.Message())
			assert.Contains(t, st.Message(), tc.message)

			if tc.token != "" {
				assert.NotContains(t, st.Message(), tc.token, "the token must never be echoed")
			}
		})
	}
}

// rawCertificate calls trustd over TLS without the package client, so that the metadata is exactly
// what the test sends (no token at all when token is empty).
func rawCertificate(t *testing.T, addr string, rootsPEM []byte, token string, csr []byte) (*trustdapi.CertificateResponse, error) {
	t.Helper()

	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(rootsPEM))

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
	})))
	require.NoError(t, err)

	t.Cleanup(func() { conn.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, trustd.TokenMetadataKey, token)
	}

	return trustdapi.NewTrustdServiceClient(conn).Certificate(ctx, &trustdapi.CertificateRequest{Csr: csr})
}

func TestServerTokens(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)
	csr := makeCSR(t, csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}})

	request := func(token string) error {
		_, _, err := trustdclient.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), token, csr)

		return err
	}

	require.NoError(t, request(machineToken), "machine.token must be accepted")
	require.NoError(t, request(acceptedToken), "an accepted token must be accepted")

	// Tokens are read per request: dropping the machine token refuses it at once.
	_, err := safe.StateUpdateWithConflicts(t.Context(), cp.state, pki.NewRootSecret(pki.RootOS).Metadata(), func(root *pki.RootSecret) error {
		root.TypedSpec().Tokens = []string{acceptedToken}

		return nil
	})
	require.NoError(t, err)

	err = request(machineToken)
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	require.NoError(t, request(acceptedToken))

	// An empty configured token must not let an empty token in.
	_, err = safe.StateUpdateWithConflicts(t.Context(), cp.state, pki.NewRootSecret(pki.RootOS).Metadata(), func(root *pki.RootSecret) error {
		root.TypedSpec().Tokens = []string{""}

		return nil
	})
	require.NoError(t, err)

	_, err = rawCertificate(t, addr, bundle(cp.accepted), "", csr)
	assert.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
}

func TestServerECDSAFamily(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootEtcd) // an ECDSA P-256 CA
	addr := startServer(t, cp.state, nil)

	_, crtPEM, err := trustdclient.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), machineToken,
		makeCSR(t, csrRequest{key: newECDSAKey(t), commonName: "worker-1", ips: []string{"10.5.0.3"}}))
	require.NoError(t, err)

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)
	assert.Equal(t, x509.ECDSA, crt.PublicKeyAlgorithm)

	_, _, err = trustdclient.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), machineToken,
		makeCSR(t, csrRequest{commonName: "worker-1", ips: []string{"10.5.0.3"}}))
	assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.ErrorContains(t, err, "key type is Ed25519 but the OS CA is ECDSA")
}

func TestServerRateLimit(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)

	// A refill slow enough that no token comes back during the test, however slow the machine.
	const burst = 5

	srv, err := trustd.New(trustd.Options{State: cp.state, Logger: zaptest.NewLogger(t), RateLimit: rate.Every(time.Hour), RateBurst: burst})
	require.NoError(t, err)

	addr := serve(t, srv)
	csr := makeCSR(t, csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}})

	for i := range burst {
		_, err := rawCertificate(t, addr, bundle(cp.accepted), machineToken, csr)
		require.NoError(t, err, "request %d is within the burst", i)
	}

	_, err = rawCertificate(t, addr, bundle(cp.accepted), machineToken, csr)
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "a request past the burst: %v", err)

	// The limit applies before authentication, so token guessing is limited too.
	_, err = rawCertificate(t, addr, bundle(cp.accepted), "guess", csr)
	assert.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
}

func TestServerSwapsCertificatePerHandshake(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)

	first := handshakeSerial(t.Context(), t, addr, cp)
	require.NotEmpty(t, first)

	crtPEM, keyPEM := issueServerCert(t, cp.ca)
	_, err := safe.StateUpdateWithConflicts(t.Context(), cp.state, pki.NewNodeCertificate(pki.CertTrustd).Metadata(), func(crt *pki.NodeCertificate) error {
		crt.TypedSpec().Certificate, crt.TypedSpec().Key = crtPEM, keyPEM

		return nil
	})
	require.NoError(t, err)

	renewed, err := certs.ParseCertificate([]byte(crtPEM))
	require.NoError(t, err)
	require.NotEqual(t, first, renewed.SerialNumber.String())

	assert.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, renewed.SerialNumber.String(), handshakeSerial(t.Context(), c, addr, cp))
	}, 10*time.Second, 20*time.Millisecond, "a new handshake must get the renewed certificate without a restart")
}

// handshakeSerial does a new TLS handshake and returns the serial of the server certificate, or
// "" after recording the failure in t (a poll's collector: a failed dial is retried).
func handshakeSerial(ctx context.Context, t assert.TestingT, addr string, cp *controlPlane) string {
	roots := x509.NewCertPool()
	roots.AddCert(cp.ca.Crt)

	dialer := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		NextProtos: []string{"h2"},
	}}

	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if !assert.NoError(t, err) {
		return ""
	}

	defer conn.Close()

	tlsConn := conn.(*tls.Conn)
	state := tlsConn.ConnectionState()

	assert.Equal(t, uint16(tls.VersionTLS13), state.Version)

	return state.PeerCertificates[0].SerialNumber.String()
}

func TestServerNotReady(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	require.NoError(t, cp.state.Destroy(t.Context(), pki.NewNodeCertificate(pki.CertTrustd).Metadata()))

	srv, err := trustd.New(trustd.Options{State: cp.state})
	require.NoError(t, err)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)

	go func() { served <- srv.Serve(ctx, lis) }()

	waitCtx, waitCancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer waitCancel()

	require.ErrorIs(t, srv.WaitReady(waitCtx), context.DeadlineExceeded, "no certificate, not ready")

	_, _, err = trustdclient.RequestCertificate(t.Context(), []string{lis.Addr().String()}, bundle(cp.accepted), machineToken,
		makeCSR(t, csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}}))
	require.Error(t, err, "handshakes must fail before the certificate exists")

	cancel()
	require.NoError(t, <-served)
}

func TestNewRequiresState(t *testing.T) {
	t.Parallel()

	_, err := trustd.New(trustd.Options{})
	require.ErrorContains(t, err, "Options.State is required")
}

func TestRequestCertificateEndpoints(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)
	csr := makeCSR(t, csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}})

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	deadAddr := closed.Addr().String()
	require.NoError(t, closed.Close())

	t.Run("falls over to the next endpoint", func(t *testing.T) {
		t.Parallel()

		_, crtPEM, err := trustdclient.RequestCertificate(t.Context(), []string{deadAddr, addr}, bundle(cp.accepted), machineToken, csr)
		require.NoError(t, err)
		assert.NotEmpty(t, crtPEM)
	})

	t.Run("names every failed endpoint", func(t *testing.T) {
		t.Parallel()

		_, _, err := trustdclient.RequestCertificate(t.Context(), []string{deadAddr, "127.0.0.1:bad:port"}, bundle(cp.accepted), machineToken, csr)
		require.Error(t, err)
		assert.Contains(t, err.Error(), deadAddr)
		assert.Contains(t, err.Error(), `endpoint "127.0.0.1:bad:port" has no valid host`)
	})

	t.Run("refuses a server outside the given roots", func(t *testing.T) {
		t.Parallel()

		other := newCA(t, certs.RootOS)

		_, _, err := trustdclient.RequestCertificate(t.Context(), []string{addr}, other.CrtPEM, machineToken, csr)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "certificate signed by unknown authority")
	})

	t.Run("refuses bad arguments", func(t *testing.T) {
		t.Parallel()

		_, _, err := trustdclient.RequestCertificate(t.Context(), nil, bundle(cp.accepted), machineToken, csr)
		require.ErrorContains(t, err, "no trustd endpoint")

		_, _, err = trustdclient.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), "", csr)
		require.ErrorContains(t, err, "no join token")

		_, _, err = trustdclient.RequestCertificate(t.Context(), []string{addr}, []byte("junk"), machineToken, csr)
		require.ErrorContains(t, err, "error reading the OS CAs")
	})

	t.Run("default port", func(t *testing.T) {
		t.Parallel()

		// Nothing listens on 127.0.0.1:50001 in tests; the error shows the port that was dialed.
		_, _, err := trustdclient.RequestCertificate(t.Context(), []string{"127.0.0.1"}, bundle(cp.accepted), machineToken, csr)
		require.Error(t, err)
		assert.True(t, strings.Contains(err.Error(), "127.0.0.1:50001"), "%v", err)
	})
}
