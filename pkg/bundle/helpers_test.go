package bundle

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
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testCA describes a certificate to mint with mintCert.
type testCA struct {
	key       crypto.Signer
	isCA      bool
	notBefore time.Time
	notAfter  time.Time
}

// mintCert creates a self-signed certificate and returns it with its key, both PEM.
func mintCert(t testing.TB, spec testCA) (crtPEM, keyPEM []byte) {
	t.Helper()

	if spec.key == nil {
		spec.key = newECKey(t)
	}

	if spec.notBefore.IsZero() {
		spec.notBefore = time.Now().Add(-time.Hour)
	}

	if spec.notAfter.IsZero() {
		spec.notAfter = time.Now().Add(24 * time.Hour)
	}

	template := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{Organization: []string{"test"}},
		NotBefore:             spec.notBefore,
		NotAfter:              spec.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  spec.isCA,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}

	der, err := x509.CreateCertificate(rand.Reader, template, template, spec.key.Public(), spec.key)
	require.NoError(t, err)

	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyToPEM(t, spec.key)
}

func keyToPEM(t testing.TB, key crypto.Signer) []byte {
	t.Helper()

	switch k := key.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(k)
		require.NoError(t, err)

		return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	default:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)

		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
}

func newECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)

	return key
}

func newEd25519Key(t testing.TB) ed25519.PrivateKey {
	t.Helper()

	_, key, err := ed25519.GenerateKey(rand.Reader)
	require.NoError(t, err)

	return key
}

// rsaKeys are generated once: RSA generation is slow, and kubeadm CAs are RSA.
var rsaKeys = sync.OnceValues(func() ([]*rsa.PrivateKey, error) {
	keys := make([]*rsa.PrivateKey, 4)

	for i := range keys {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, err
		}

		keys[i] = key
	}

	return keys, nil
})

func rsaKey(t testing.TB, i int) *rsa.PrivateKey {
	t.Helper()

	keys, err := rsaKeys()
	require.NoError(t, err)

	return keys[i]
}

// writeKubeadmPKI lays out a kubeadm PKI directory with real RSA CAs and returns it.
func writeKubeadmPKI(t testing.TB) string {
	t.Helper()

	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "etcd"), 0o700))

	for i, name := range []string{"ca", filepath.Join("etcd", "ca"), "front-proxy-ca"} {
		crt, key := mintCert(t, testCA{key: rsaKey(t, i), isCA: true, notAfter: time.Now().Add(10 * 365 * 24 * time.Hour)})
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".crt"), crt, 0o600))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".key"), key, 0o600))
	}

	require.NoError(t, os.WriteFile(filepath.Join(dir, "sa.key"), keyToPEM(t, rsaKey(t, 3)), 0o600))

	return dir
}

// generated returns a fresh valid bundle.
func generated(t testing.TB) *Bundle {
	t.Helper()

	b, err := Generate()
	require.NoError(t, err)

	return b
}

// dirEntries lists the names in dir, to prove that nothing (not even a temp file) was left.
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)

	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}

	return names
}
