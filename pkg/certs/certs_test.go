package certs_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
)

// rsaCA is generated once: RSA key generation is slow and kubeadm-imported CAs are RSA.
var rsaCA = sync.OnceValues(func() (*certs.CA, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}

	crt, err := selfSigned(key, true)
	if err != nil {
		return nil, err
	}

	return certs.LoadCA(crt, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}))
})

func selfSigned(key crypto.Signer, isCA bool) ([]byte, error) {
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}

	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return nil, err
	}

	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func rootCA(t *testing.T, root string) *certs.CA {
	t.Helper()

	crt, key, err := certs.NewRootCA(root)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(t, err)

	return ca
}

func TestIssueFollowsCAKeyFamily(t *testing.T) {
	t.Parallel()

	rsaRoot, err := rsaCA()
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		ca      func(t *testing.T) *certs.CA
		wantKey any
	}{
		{"ed25519 os CA", func(t *testing.T) *certs.CA { return rootCA(t, certs.RootOS) }, ed25519.PrivateKey(nil)},
		{"ecdsa kubernetes CA", func(t *testing.T) *certs.CA { return rootCA(t, certs.RootKubernetes) }, &ecdsa.PrivateKey{}},
		{"ecdsa etcd CA", func(t *testing.T) *certs.CA { return rootCA(t, certs.RootEtcd) }, &ecdsa.PrivateKey{}},
		{"ecdsa aggregator CA", func(t *testing.T) *certs.CA { return rootCA(t, certs.RootAggregator) }, &ecdsa.PrivateKey{}},
		{"rsa CA", func(*testing.T) *certs.CA { return rsaRoot }, &rsa.PrivateKey{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			ca := tc.ca(t)
			now := time.Now()

			profile := certs.Profile{
				CommonName:  "node-1",
				DNSNames:    []string{"node-1.example"},
				IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
				KeyUsage:    x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				Lifetime:    24 * time.Hour,
			}

			crtPEM, keyPEM, err := ca.Issue(profile, now)
			require.NoError(t, err)

			crt, err := certs.ParseCertificate(crtPEM)
			require.NoError(t, err)

			key, err := certs.ParsePrivateKey(keyPEM)
			require.NoError(t, err)

			assert.IsType(t, tc.wantKey, key)
			assert.True(t, certs.KeyMatchesCertificate(crt, key))
			assert.Equal(t, ca.Crt.PublicKeyAlgorithm, crt.PublicKeyAlgorithm)

			if ec, ok := key.(*ecdsa.PrivateKey); ok {
				assert.Equal(t, elliptic.P256(), ec.Curve)
			}

			pool := x509.NewCertPool()
			pool.AddCert(ca.Crt)

			_, err = crt.Verify(x509.VerifyOptions{
				Roots:       pool,
				DNSName:     "node-1.example",
				KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				CurrentTime: now,
			})
			require.NoError(t, err)

			assert.Equal(t, "node-1", crt.Subject.CommonName)
			assert.False(t, crt.IsCA)
			assert.WithinDuration(t, now.Add(-certs.Backdate), crt.NotBefore, time.Second, "NotBefore is backdated")
			assert.WithinDuration(t, now.Add(24*time.Hour), crt.NotAfter, time.Second)
			assert.Equal(t, ca.Crt.SubjectKeyId, crt.AuthorityKeyId)

			other := rootCA(t, certs.RootOS)
			otherPool := x509.NewCertPool()
			otherPool.AddCert(other.Crt)

			_, err = crt.Verify(x509.VerifyOptions{Roots: otherPool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			require.Error(t, err, "a leaf does not verify against another CA")
		})
	}
}

func TestIssueParsedIsIssueWithTheParsedCertificate(t *testing.T) {
	t.Parallel()

	for _, root := range []string{certs.RootOS, certs.RootEtcd} {
		t.Run(root, func(t *testing.T) {
			t.Parallel()

			ca := rootCA(t, root)
			now := time.Now()
			profile := certs.Profile{
				CommonName:  "node-1",
				DNSNames:    []string{"node-1.example"},
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				Lifetime:    time.Hour,
			}

			issued, err := ca.IssueParsed(profile, now)
			require.NoError(t, err)

			fromPEM, err := certs.ParseCertificate(issued.CrtPEM)
			require.NoError(t, err)
			assert.Equal(t, fromPEM.Raw, issued.Crt.Raw, "Crt is the certificate of CrtPEM")

			key, err := certs.ParsePrivateKey(issued.KeyPEM)
			require.NoError(t, err)
			assert.True(t, certs.KeyMatchesCertificate(issued.Crt, key), "KeyPEM is the key of the certificate")

			require.NoError(t, issued.Crt.CheckSignatureFrom(ca.Crt))
			assert.Equal(t, "node-1", issued.Crt.Subject.CommonName)
			assert.Equal(t, []string{"node-1.example"}, issued.Crt.DNSNames)
			assert.WithinDuration(t, now.Add(-certs.Backdate), issued.Crt.NotBefore, time.Second)
			assert.WithinDuration(t, now.Add(time.Hour), issued.Crt.NotAfter, time.Second)
		})
	}
}

func TestSignCSRUsesProfileNotRequest(t *testing.T) {
	t.Parallel()

	ca := rootCA(t, certs.RootOS)

	_, requesterKey, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "attacker", Organization: []string{"os:admin", "os:impersonator"}},
		DNSNames:       []string{"evil.example"},
		IPAddresses:    []net.IP{net.ParseIP("10.66.66.66")},
		EmailAddresses: []string{"evil@example.com"},
	}, requesterKey)
	require.NoError(t, err)

	csr, err := x509.ParseCertificateRequest(csrDER)
	require.NoError(t, err)

	now := time.Now()
	profile := certs.Profile{
		CommonName:  "worker-1",
		DNSNames:    []string{"worker-1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.5")},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		Lifetime:    time.Hour,
	}

	crtPEM, err := ca.SignCSR(csr, profile, now)
	require.NoError(t, err)

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	assert.Equal(t, "worker-1", crt.Subject.CommonName)
	assert.Empty(t, crt.Subject.Organization, "the CSR's roles are not copied")
	assert.Equal(t, []string{"worker-1"}, crt.DNSNames)
	assert.Len(t, crt.IPAddresses, 1)
	assert.True(t, crt.IPAddresses[0].Equal(net.ParseIP("127.0.0.5")))
	assert.Empty(t, crt.EmailAddresses)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, crt.ExtKeyUsage)
	assert.Equal(t, x509.KeyUsageDigitalSignature, crt.KeyUsage)
	assert.True(t, requesterKey.Public().(ed25519.PublicKey).Equal(crt.PublicKey), "the CSR's key is certified")

	pool := x509.NewCertPool()
	pool.AddCert(ca.Crt)

	_, err = crt.Verify(x509.VerifyOptions{Roots: pool, DNSName: "worker-1", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	require.NoError(t, err)

	_, err = crt.Verify(x509.VerifyOptions{Roots: pool, DNSName: "evil.example", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	require.Error(t, err)

	tampered, err := x509.ParseCertificateRequest(csrDER)
	require.NoError(t, err)

	tampered.Signature[0] ^= 0xff

	_, err = ca.SignCSR(tampered, profile, now)
	require.ErrorContains(t, err, "CSR signature is invalid")
}

func TestClientProfile(t *testing.T) {
	t.Parallel()

	roles := []string{"os:reader", "os:admin", "os:reader"}
	p := certs.ClientProfile(roles, time.Hour)

	assert.Equal(t, []string{"os:admin", "os:reader"}, p.Organization)
	assert.Equal(t, []string{"os:reader", "os:admin", "os:reader"}, roles, "the caller's slice is not reordered")
	assert.Empty(t, p.CommonName)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, p.ExtKeyUsage)
	assert.Equal(t, time.Hour, p.Lifetime)
}

func TestLoadCARejects(t *testing.T) {
	t.Parallel()

	osCrt, osKey, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	_, otherKey, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)

	leafCrt, err := selfSigned(leafKey, false)
	require.NoError(t, err)

	leafKeyDER, err := x509.MarshalECPrivateKey(leafKey)
	require.NoError(t, err)

	for _, tc := range []struct {
		name     string
		crt, key []byte
		want     string
	}{
		{"mismatched key", osCrt, otherKey, "key does not match the certificate"},
		{"not a CA", leafCrt, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: leafKeyDER}), "certificate is not a CA"},
		{"crt not PEM", []byte("garbage"), osKey, "crt: not PEM"},
		{"key not PEM", osCrt, []byte("garbage"), "key: not PEM"},
		{"key is a certificate", osCrt, osCrt, `key: PEM block is "CERTIFICATE"`},
		{"crt is a key", osKey, osKey, "crt: PEM block is"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			_, err := certs.LoadCA(tc.crt, tc.key)
			require.ErrorContains(t, err, tc.want)
		})
	}

	ca, err := certs.LoadCA(osCrt, osKey)
	require.NoError(t, err)
	assert.Equal(t, []string{"talos"}, ca.Crt.Subject.Organization)
}

func TestNewRootCAUnknownRoot(t *testing.T) {
	t.Parallel()

	_, _, err := certs.NewRootCA("kubelet")
	require.EqualError(t, err, `unknown root "kubelet": want one of os, kubernetes, etcd, aggregator`)
}

func TestFingerprints(t *testing.T) {
	t.Parallel()

	ca := rootCA(t, certs.RootKubernetes)

	fromKey, err := certs.PublicKeyFingerprint(ca.Key.Public())
	require.NoError(t, err)
	assert.Equal(t, certs.Fingerprint(ca.Crt), fromKey)
	assert.Len(t, fromKey, 64)

	pubPEM, err := certs.PublicKeyPEM(ca.KeyPEM)
	require.NoError(t, err)

	pub, err := certs.ParsePublicKey(pubPEM)
	require.NoError(t, err)

	fromPub, err := certs.PublicKeyFingerprint(pub)
	require.NoError(t, err)
	assert.Equal(t, fromKey, fromPub)

	other := rootCA(t, certs.RootKubernetes)
	assert.NotEqual(t, certs.Fingerprint(ca.Crt), certs.Fingerprint(other.Crt))
}

func TestParseCertificates(t *testing.T) {
	t.Parallel()

	a, b := rootCA(t, certs.RootOS), rootCA(t, certs.RootEtcd)

	bundle := append(append([]byte{}, a.CrtPEM...), b.CrtPEM...)

	parsed, err := certs.ParseCertificates(bundle)
	require.NoError(t, err)
	require.Len(t, parsed, 2)
	assert.Equal(t, a.Crt.Raw, parsed[0].Raw)
	assert.Equal(t, b.Crt.Raw, parsed[1].Raw)

	_, err = certs.ParseCertificates(append(bundle, a.KeyPEM...))
	require.ErrorContains(t, err, "want CERTIFICATE")

	_, err = certs.ParseCertificates(append(bundle, "trailing"...))
	require.ErrorContains(t, err, "trailing data")

	_, err = certs.ParseCertificates(nil)
	require.ErrorContains(t, err, "no certificate found")
}
