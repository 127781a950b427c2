package pki

import (
	"crypto"
	"crypto/rand"
	stdx509 "crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
)

// testCA builds a CA certificate for key with the template's fields on top of a plain CA.
func testCA(t *testing.T, key crypto.Signer, edit func(*stdx509.Certificate)) *stdx509.Certificate {
	t.Helper()

	template := &stdx509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "test CA", Organization: []string{"talos"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              stdx509.KeyUsageCertSign | stdx509.KeyUsageDigitalSignature,
	}

	if edit != nil {
		edit(template)
	}

	der, err := stdx509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	require.NoError(t, err)

	crt, err := stdx509.ParseCertificate(der)
	require.NoError(t, err)

	return crt
}

// issueRemembered issues a leaf from the CA as NodeCertificatesController does, memo included.
func issueRemembered(t *testing.T, ca *certs.CA) *stdx509.Certificate {
	t.Helper()

	issued, err := ca.IssueParsed(certs.Profile{CommonName: "node-1", Lifetime: time.Hour, ExtKeyUsage: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}}, time.Now())
	require.NoError(t, err)

	rememberLeaf(string(issued.CrtPEM), issued.Crt, ca.Crt)

	return issued.Crt
}

func loadTestCA(t *testing.T, root string) *certs.CA {
	t.Helper()

	crtPEM, keyPEM, err := certs.NewRootCA(root)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crtPEM, keyPEM)
	require.NoError(t, err)

	return ca
}

// TestSignedByAcceptedCA checks that a remembered signature never makes a leaf trusted that x509
// verification refuses, and that it answers for the leaves the node issues itself.
func TestSignedByAcceptedCA(t *testing.T) {
	t.Parallel()

	issuer := loadTestCA(t, certs.RootEtcd)
	other := loadTestCA(t, certs.RootEtcd)
	leaf := issueRemembered(t, issuer)
	now := time.Now()

	notRemembered, _, err := issuer.Issue(certs.Profile{CommonName: "node-2", Lifetime: time.Hour}, now)
	require.NoError(t, err)

	for _, tc := range []struct {
		name string
		leaf *stdx509.Certificate
		cas  []*stdx509.Certificate
		at   time.Time
		// memo is whether the memo answers (true: trusted by that CA); x509 whether x509 trusts it.
		memo, x509 bool
	}{
		{name: "issuer accepted", leaf: leaf, cas: []*stdx509.Certificate{issuer.Crt}, at: now, memo: true, x509: true},
		{name: "issuer accepted after another CA", leaf: leaf, cas: []*stdx509.Certificate{other.Crt, issuer.Crt}, at: now, memo: true, x509: true},
		{name: "issuer no longer accepted", leaf: leaf, cas: []*stdx509.Certificate{other.Crt}, at: now},
		{name: "no CA accepted", leaf: leaf, at: now},
		{name: "issuer expired", leaf: leaf, cas: []*stdx509.Certificate{issuer.Crt}, at: issuer.Crt.NotAfter.Add(time.Second)},
		{name: "issuer not valid yet", leaf: leaf, cas: []*stdx509.Certificate{issuer.Crt}, at: issuer.Crt.NotBefore.Add(-time.Second)},
		{
			name: "signature never checked", leaf: parseCertificatePEM(t, notRemembered),
			cas: []*stdx509.Certificate{issuer.Crt}, at: now, x509: true,
		},
		{
			name: "same key, but not a CA", leaf: leaf, at: now,
			cas: []*stdx509.Certificate{testCA(t, issuer.Key, func(c *stdx509.Certificate) {
				c.Subject, c.IsCA = issuer.Crt.Subject, false
			})},
		},
		{
			name: "same key, but may not sign certificates", leaf: leaf, at: now,
			cas: []*stdx509.Certificate{testCA(t, issuer.Key, func(c *stdx509.Certificate) {
				c.Subject, c.KeyUsage = issuer.Crt.Subject, stdx509.KeyUsageDigitalSignature
			})},
		},
		{
			name: "same key, another subject", leaf: leaf, at: now,
			cas: []*stdx509.Certificate{testCA(t, issuer.Key, nil)},
		},
		{
			// Left to x509, which accepts this leaf: it has no SAN to constrain.
			name: "same key, with name constraints", leaf: leaf, at: now, x509: true,
			cas: []*stdx509.Certificate{testCA(t, issuer.Key, func(c *stdx509.Certificate) {
				c.Subject, c.PermittedDNSDomains = issuer.Crt.Subject, []string{"example.com"}
			})},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			ca, ok := signedByAcceptedCA(tc.leaf, tc.cas, tc.at)
			assert.Equal(t, tc.memo, ok, "memo")

			if ok {
				assert.Equal(t, issuer.Crt.Raw, ca.Raw)
			}

			assert.Equal(t, tc.x509, x509Trusts(tc.leaf, tc.cas, tc.at), "x509")
		})
	}
}

func x509Trusts(leaf *stdx509.Certificate, cas []*stdx509.Certificate, at time.Time) bool {
	pool := stdx509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}

	chains, err := leaf.Verify(stdx509.VerifyOptions{Roots: pool, CurrentTime: at, KeyUsages: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageAny}})

	return err == nil && len(chains) > 0
}

func parseCertificatePEM(t *testing.T, crtPEM []byte) *stdx509.Certificate {
	t.Helper()

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	return crt
}

func TestRememberSignatureSkipsAlgorithmsX509Refuses(t *testing.T) {
	t.Parallel()

	issuer := loadTestCA(t, certs.RootKubernetes)

	crtPEM, _, err := issuer.Issue(certs.Profile{CommonName: "node-1", Lifetime: time.Hour}, time.Now())
	require.NoError(t, err)

	leaf := parseCertificatePEM(t, crtPEM)
	sha1 := *leaf
	sha1.SignatureAlgorithm = stdx509.ECDSAWithSHA1

	rememberSignature(&sha1, issuer.Crt)

	_, ok := signedByAcceptedCA(leaf, []*stdx509.Certificate{issuer.Crt}, time.Now())
	assert.False(t, ok)

	rememberSignature(leaf, issuer.Crt)

	_, ok = signedByAcceptedCA(leaf, []*stdx509.Certificate{issuer.Crt}, time.Now())
	assert.True(t, ok)
}

func TestParseLeafReturnsTheRememberedCertificate(t *testing.T) {
	t.Parallel()

	issuer := loadTestCA(t, certs.RootOS)
	leaf := issueRemembered(t, issuer)

	got, err := parseLeaf(certificatePEM(leaf))
	require.NoError(t, err)
	assert.Same(t, leaf, got)

	_, err = parseLeaf("not a certificate")
	require.ErrorContains(t, err, "not PEM")
}

func TestBoundedMemoForgetsTheOldest(t *testing.T) {
	t.Parallel()

	m := newBoundedMemo[string, int](3)

	for i, key := range []string{"a", "b", "c", "a", "d"} {
		m.put(key, i)
	}

	// Replacing the value of "a" does not make it younger: it was stored first, so it goes first.
	for key, want := range map[string]int{"b": 1, "c": 2, "d": 4} {
		got, ok := m.get(key)
		if assert.True(t, ok, key) {
			assert.Equal(t, want, got, key)
		}
	}

	_, ok := m.get("a")
	assert.False(t, ok, "the oldest entry must be gone")
	assert.Len(t, m.entries, 3)
}
