package api

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/role"
)

func renewalCSR(t *testing.T, key crypto.Signer, subject pkix.Name) []byte {
	t.Helper()

	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	require.NoError(t, err)

	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

func TestRenewClientCertificate(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	cp := startNode(t, p, nodeSpec{addr: "127.0.100.2", controlPlane: true})

	for _, roles := range [][]string{{role.Reader}, {role.Operator, role.Reader}, {role.Admin}, {role.EtcdBackup}} {
		t.Run(roles[0], func(t *testing.T) {
			t.Parallel()

			old := issueClientCert(t, p.osCA, clientCertSpec{roles: roles})
			conn := dial(t, cp.endpoint, old, p.osCA)

			key, ok := old.PrivateKey.(crypto.Signer)
			require.True(t, ok)

			// The CSR asks for more than the caller has: the server must not care.
			csr := renewalCSR(t, key, pkix.Name{Organization: []string{role.Admin}, CommonName: "root"})

			resp, err := nodeClient(conn).RenewClientCertificate(callCtx(t), &node.RenewClientCertificateRequest{Csr: csr, CrtTtlSeconds: 7200})
			require.NoError(t, err)

			assert.Equal(t, p.osCA.CrtPEM, resp.GetCa())

			crt, err := certs.ParseCertificate(resp.GetCrt())
			require.NoError(t, err)
			assert.ElementsMatch(t, roles, crt.Subject.Organization, "exactly the caller's roles")
			assert.Empty(t, crt.Subject.CommonName)
			assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, crt.ExtKeyUsage)
			assert.WithinDuration(t, time.Now().Add(2*time.Hour), crt.NotAfter, time.Minute)
			assert.True(t, certs.KeyMatchesCertificate(crt, key), "same key pair")

			// The new certificate is accepted, with the roles it carries; the old one still works.
			renewed := dial(t, cp.endpoint, tls.Certificate{Certificate: [][]byte{crt.Raw}, PrivateKey: key}, p.osCA)
			_, err = nodeClient(renewed).Version(callCtx(t), &node.VersionRequest{})
			require.NoError(t, err)

			_, err = nodeClient(renewed).GenerateClientConfiguration(callCtx(t), &node.GenerateClientConfigurationRequest{Roles: []string{role.Reader}})
			if roles[0] == role.Admin {
				require.NoError(t, err)
			} else {
				assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
			}

			_, err = nodeClient(conn).Version(callCtx(t), &node.VersionRequest{})
			require.NoError(t, err)
		})
	}

	t.Run("default lifetime", func(t *testing.T) {
		t.Parallel()

		old := issueClientCert(t, p.osCA, clientCertSpec{roles: []string{role.Reader}})
		key, ok := old.PrivateKey.(crypto.Signer)
		require.True(t, ok)

		resp, err := nodeClient(dial(t, cp.endpoint, old, p.osCA)).RenewClientCertificate(callCtx(t),
			&node.RenewClientCertificateRequest{Csr: renewalCSR(t, key, pkix.Name{})})
		require.NoError(t, err)

		crt, err := certs.ParseCertificate(resp.GetCrt())
		require.NoError(t, err)
		assert.WithinDuration(t, time.Now().Add(certs.ClientLifetime), crt.NotAfter, time.Minute)
	})

	t.Run("bad requests", func(t *testing.T) {
		t.Parallel()

		reader := nodeClient(cp.dialAs(t, p, role.Reader))

		other := issueClientCert(t, p.osCA, clientCertSpec{roles: []string{role.Reader}})
		key, ok := other.PrivateKey.(crypto.Signer)
		require.True(t, ok)

		forged := renewalCSR(t, key, pkix.Name{})
		block, _ := pem.Decode(forged)
		block.Bytes[len(block.Bytes)-1] ^= 0xff
		forged = pem.EncodeToMemory(block)

		for _, tc := range []struct {
			name string
			req  *node.RenewClientCertificateRequest
			want string
		}{
			{"empty", &node.RenewClientCertificateRequest{}, "csr is empty"},
			{"not PEM", &node.RenewClientCertificateRequest{Csr: []byte("hello")}, "not a PEM CERTIFICATE REQUEST"},
			{"a certificate", &node.RenewClientCertificateRequest{Csr: p.osCA.CrtPEM}, "not a PEM CERTIFICATE REQUEST"},
			{"bad signature", &node.RenewClientCertificateRequest{Csr: forged}, "signature"},
			{"too big", &node.RenewClientCertificateRequest{Csr: make([]byte, maxCSRSize+1)}, "more than"},
			{"negative ttl", &node.RenewClientCertificateRequest{Csr: renewalCSR(t, key, pkix.Name{}), CrtTtlSeconds: -1}, "negative"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := reader.RenewClientCertificate(callCtx(t), tc.req)
				assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
				assert.ErrorContains(t, err, tc.want)
			})
		}
	})

	t.Run("a certificate of another CA is refused", func(t *testing.T) {
		t.Parallel()

		foreign := issueClientCert(t, newTestCA(t), clientCertSpec{roles: []string{role.Admin}})
		key, ok := foreign.PrivateKey.(crypto.Signer)
		require.True(t, ok)

		_, err := nodeClient(dial(t, cp.endpoint, foreign, p.osCA)).RenewClientCertificate(callCtx(t),
			&node.RenewClientCertificateRequest{Csr: renewalCSR(t, key, pkix.Name{})})
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
	})

	t.Run("worker", func(t *testing.T) {
		t.Parallel()

		w := startNode(t, p, nodeSpec{addr: "127.0.100.3"})

		old := issueClientCert(t, p.osCA, clientCertSpec{roles: []string{role.Reader}})
		key, ok := old.PrivateKey.(crypto.Signer)
		require.True(t, ok)

		_, err := nodeClient(dial(t, w.endpoint, old, p.osCA)).RenewClientCertificate(callCtx(t),
			&node.RenewClientCertificateRequest{Csr: renewalCSR(t, key, pkix.Name{})})
		assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
		assert.ErrorContains(t, err, "control-plane nodes only")
	})
}

func FuzzParseRenewalCSR(f *testing.F) {
	key, err := certs.ParsePrivateKey(fuzzClientKey(f))
	require.NoError(f, err)

	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(f, err)

	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := parseRenewalCSR(data)
		if err != nil {
			assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)

			return
		}

		assert.NotNil(t, csr.PublicKey)
		assert.LessOrEqual(t, len(data), maxCSRSize)
	})
}

// fuzzClientKey is the PEM key of a client certificate of the shared test PKI.
func fuzzClientKey(f *testing.F) []byte {
	f.Helper()

	p, err := sharedPKI()
	require.NoError(f, err)

	_, key, err := p.osCA.Issue(certs.ClientProfile([]string{role.Reader}, time.Hour), time.Now())
	require.NoError(f, err)

	return key
}
