package bundle

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/role"
)

var tokenPattern = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

func TestGenerate(t *testing.T) {
	t.Parallel()

	b := generated(t)
	require.NoError(t, b.Validate())

	id, err := base64.URLEncoding.DecodeString(b.Cluster.ID)
	require.NoError(t, err, "cluster.id is padded base64url")
	assert.Len(t, id, 32)
	assert.Len(t, b.Cluster.ID, 44)

	secret, err := base64.StdEncoding.DecodeString(b.Cluster.Secret)
	require.NoError(t, err)
	assert.Len(t, secret, 32)

	encryption, err := base64.StdEncoding.DecodeString(b.Secrets.SecretboxEncryptionSecret)
	require.NoError(t, err)
	assert.Len(t, encryption, 32)
	assert.Empty(t, b.Secrets.AESCBCEncryptionSecret)

	assert.Regexp(t, tokenPattern, b.Secrets.BootstrapToken)
	assert.Regexp(t, tokenPattern, b.TrustdInfo.Token)
	assert.NotEqual(t, b.Secrets.BootstrapToken, b.TrustdInfo.Token)

	now := time.Now()

	for _, tc := range []struct {
		name         string
		crtPEM       []byte
		wantKeyType  any
		organization []string
	}{
		{"os", b.Certs.OS.Crt, ed25519.PublicKey(nil), []string{"talos"}},
		{"k8s", b.Certs.K8s.Crt, &ecdsa.PublicKey{}, []string{"kubernetes"}},
		{"etcd", b.Certs.Etcd.Crt, &ecdsa.PublicKey{}, []string{"etcd"}},
		{"k8saggregator", b.Certs.K8sAggregator.Crt, &ecdsa.PublicKey{}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			crt, err := certs.ParseCertificate(tc.crtPEM)
			require.NoError(t, err)

			assert.True(t, crt.IsCA)
			assert.IsType(t, tc.wantKeyType, crt.PublicKey)
			assert.Equal(t, tc.organization, crt.Subject.Organization)
			assert.Empty(t, crt.Subject.CommonName)
			assert.WithinDuration(t, now.Add(certs.CALifetime), crt.NotAfter, time.Minute, "10 years")
			assert.False(t, crt.NotBefore.After(now))

			if ec, ok := crt.PublicKey.(*ecdsa.PublicKey); ok {
				assert.Equal(t, elliptic.P256(), ec.Curve)
			}
		})
	}

	saKey, err := certs.ParsePrivateKey(b.Certs.K8sServiceAccount.Key)
	require.NoError(t, err)
	assert.IsType(t, &ecdsa.PrivateKey{}, saKey)

	other := generated(t)
	assert.NotEqual(t, b.Cluster.ID, other.Cluster.ID)
	assert.NotEqual(t, b.Certs.OS.Crt, other.Certs.OS.Crt)
}

func TestMarshalRoundTrip(t *testing.T) {
	t.Parallel()

	b := generated(t)

	data, err := b.Marshal()
	require.NoError(t, err)

	assert.True(t, strings.HasPrefix(string(data), "cluster:\n    id: "), "4-space indent like Talos:\n%s", data)
	assert.Contains(t, string(data), "\n    os:\n        crt: ")

	for _, key := range []string{
		"cluster:", "secrets:", "trustdinfo:", "certs:", "bootstraptoken:", "secretboxencryptionsecret:",
		"token:", "etcd:", "k8s:", "k8saggregator:", "k8sserviceaccount:", "os:",
	} {
		assert.Contains(t, string(data), key)
	}

	assert.NotContains(t, string(data), "aescbcencryptionsecret", "empty encryption secret is omitted")

	parsed, err := Parse(data)
	require.NoError(t, err)
	assert.Equal(t, b, parsed)

	path := filepath.Join(t.TempDir(), "secrets.yaml")
	require.NoError(t, b.WriteFile(path, false))

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	loaded, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, b, loaded)
}

func TestWriteFileRefusesOverwrite(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	path := filepath.Join(dir, "secrets.yaml")
	require.NoError(t, os.WriteFile(path, []byte("precious\n"), 0o644))

	b := generated(t)

	err := b.WriteFile(path, false)
	require.EqualError(t, err, `file "`+path+`" already exists, use --force to overwrite`)

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, "precious\n", string(data))
	assert.Equal(t, []string{"secrets.yaml"}, dirEntries(t, dir))

	require.NoError(t, b.WriteFile(path, true))

	loaded, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, b, loaded)

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), "the replaced file gets mode 0600")
	assert.Equal(t, []string{"secrets.yaml"}, dirEntries(t, dir), "no temp file left behind")
}

func TestWriteFileMissingDirectory(t *testing.T) {
	t.Parallel()

	err := generated(t).WriteFile(filepath.Join(t.TempDir(), "missing", "secrets.yaml"), false)
	require.ErrorContains(t, err, "secrets.yaml")
}

func TestNewClientCertificate(t *testing.T) {
	t.Parallel()

	b := generated(t)

	crtPEM, keyPEM, err := b.NewClientCertificate([]string{role.Reader, role.Admin}, certs.ClientLifetime)
	require.NoError(t, err)

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	key, err := certs.ParsePrivateKey(keyPEM)
	require.NoError(t, err)
	assert.True(t, certs.KeyMatchesCertificate(crt, key))
	assert.IsType(t, ed25519.PrivateKey(nil), key, "leaf key follows the Ed25519 OS CA")

	assert.Equal(t, []string{"os:admin", "os:reader"}, crt.Subject.Organization)
	assert.Empty(t, crt.Subject.CommonName)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, crt.ExtKeyUsage)
	assert.False(t, crt.IsCA)
	assert.WithinDuration(t, time.Now().Add(certs.ClientLifetime), crt.NotAfter, time.Minute)

	ca, err := certs.ParseCertificate(b.Certs.OS.Crt)
	require.NoError(t, err)

	pool := x509.NewCertPool()
	pool.AddCert(ca)

	_, err = crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)

	_, err = crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	require.Error(t, err, "a client certificate must not serve as a server certificate")

	for _, tc := range []struct {
		name  string
		roles []string
		ttl   time.Duration
		want  string
	}{
		{"no roles", nil, time.Hour, "no roles given"},
		{"unknown role", []string{"os:root"}, time.Hour, `unknown role "os:root"`},
		{"zero ttl", []string{role.Admin}, 0, "must be positive"},
	} {
		_, _, err := b.NewClientCertificate(tc.roles, tc.ttl)
		require.ErrorContains(t, err, tc.want, tc.name)
	}

	broken := generated(t)
	broken.Certs.OS.Key = b.Certs.K8s.Key

	_, _, err = broken.NewClientCertificate([]string{role.Admin}, time.Hour)
	require.ErrorContains(t, err, "certs.os: key does not match")
}

func TestFromKubernetesPKI(t *testing.T) {
	t.Parallel()

	dir := writeKubeadmPKI(t)

	b, err := FromKubernetesPKI(dir, "abcdef.0123456789abcdef")
	require.NoError(t, err)
	require.NoError(t, b.Validate())

	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)

		return data
	}

	assert.Equal(t, read("ca.crt"), []byte(b.Certs.K8s.Crt))
	assert.Equal(t, read("ca.key"), []byte(b.Certs.K8s.Key))
	assert.Equal(t, read("etcd/ca.crt"), []byte(b.Certs.Etcd.Crt))
	assert.Equal(t, read("etcd/ca.key"), []byte(b.Certs.Etcd.Key))
	assert.Equal(t, read("front-proxy-ca.crt"), []byte(b.Certs.K8sAggregator.Crt))
	assert.Equal(t, read("front-proxy-ca.key"), []byte(b.Certs.K8sAggregator.Key))
	assert.Equal(t, read("sa.key"), []byte(b.Certs.K8sServiceAccount.Key))
	assert.Equal(t, "abcdef.0123456789abcdef", b.Secrets.BootstrapToken)

	saKey, err := certs.ParsePrivateKey(b.Certs.K8sServiceAccount.Key)
	require.NoError(t, err)
	assert.IsType(t, &rsa.PrivateKey{}, saKey, "RSA service-account keys are accepted")

	osCA, err := certs.ParseCertificate(b.Certs.OS.Crt)
	require.NoError(t, err)
	assert.IsType(t, ed25519.PublicKey(nil), osCA.PublicKey, "the OS CA is generated")
	assert.Regexp(t, tokenPattern, b.TrustdInfo.Token)

	generatedToken, err := FromKubernetesPKI(dir, "")
	require.NoError(t, err)
	assert.Regexp(t, tokenPattern, generatedToken.Secrets.BootstrapToken)
}

func TestFromKubernetesPKIErrors(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name   string
		token  string
		mutate func(t *testing.T, dir string)
		want   string
	}{
		{
			name:   "missing etcd key",
			mutate: func(t *testing.T, dir string) { require.NoError(t, os.Remove(filepath.Join(dir, "etcd", "ca.key"))) },
			want:   filepath.Join("etcd", "ca.key"),
		},
		{
			name: "front-proxy key of another CA",
			mutate: func(t *testing.T, dir string) {
				copyFile(t, filepath.Join(dir, "ca.key"), filepath.Join(dir, "front-proxy-ca.key"))
			},
			want: "front-proxy-ca.key: key does not match the certificate",
		},
		{
			name: "ca.crt is not a CA",
			mutate: func(t *testing.T, dir string) {
				crt, key := mintCert(t, testCA{key: rsaKey(t, 0)})
				require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.crt"), crt, 0o600))
				require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.key"), key, 0o600))
			},
			want: "ca.crt: certificate is not a CA",
		},
		{
			name: "expired etcd CA",
			mutate: func(t *testing.T, dir string) {
				crt, _ := mintCert(t, testCA{key: rsaKey(t, 1), isCA: true, notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
				require.NoError(t, os.WriteFile(filepath.Join(dir, "etcd", "ca.crt"), crt, 0o600))
			},
			want: filepath.Join("etcd", "ca.crt") + ": CA expired",
		},
		{
			name: "sa.key not PEM",
			mutate: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "sa.key"), []byte("junk"), 0o600))
			},
			want: "sa.key: not PEM",
		},
		{
			name: "sa.key Ed25519",
			mutate: func(t *testing.T, dir string) {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "sa.key"), keyToPEM(t, newEd25519Key(t)), 0o600))
			},
			want: "sa.key: Ed25519 keys cannot sign",
		},
		{
			name:   "bad bootstrap token",
			token:  "test-token",
			mutate: func(*testing.T, string) {},
			want:   "kubernetes bootstrap token: not a valid token",
		},
		{
			name:   "not a directory",
			mutate: func(t *testing.T, dir string) { require.NoError(t, os.RemoveAll(dir)) },
			want:   "kubernetes PKI directory",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			dir := writeKubeadmPKI(t)
			tc.mutate(t, dir)

			_, err := FromKubernetesPKI(dir, tc.token)
			require.ErrorContains(t, err, tc.want)
		})
	}

	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))

	_, err := FromKubernetesPKI(file, "")
	require.ErrorContains(t, err, "is not a directory")
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()

	data, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, data, 0o600))
}

func BenchmarkGenerate(b *testing.B) {
	for b.Loop() {
		if _, err := Generate(); err != nil {
			b.Fatal(err)
		}
	}
}
