package bundle

import (
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	talosconfig "github.com/siderolabs/talos/pkg/machinery/config"
	"github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"github.com/siderolabs/talos/pkg/machinery/role"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/nodepki/nodepki/pkg/certs"
)

// TestTalosBundleLoads checks that a secrets.yaml written by Talos (current contract: RSA-4096
// service-account key) loads and validates unchanged.
func TestTalosBundleLoads(t *testing.T) {
	t.Parallel()

	talos, err := secrets.NewBundle(secrets.NewFixedClock(time.Now()), talosconfig.TalosVersionCurrent)
	require.NoError(t, err)

	// talosctl gen secrets marshals the bundle with yaml.v3, as here.
	data, err := yaml.Marshal(talos)
	require.NoError(t, err)

	b, err := Parse(data)
	require.NoError(t, err)

	assert.Equal(t, talos.Cluster.ID, b.Cluster.ID)
	assert.Equal(t, talos.Cluster.Secret, b.Cluster.Secret)
	assert.Equal(t, talos.Secrets.BootstrapToken, b.Secrets.BootstrapToken)
	assert.Equal(t, talos.Secrets.SecretboxEncryptionSecret, b.Secrets.SecretboxEncryptionSecret)
	assert.Equal(t, talos.TrustdInfo.Token, b.TrustdInfo.Token)
	assert.Equal(t, talos.Certs.OS.Crt, []byte(b.Certs.OS.Crt))
	assert.Equal(t, talos.Certs.OS.Key, []byte(b.Certs.OS.Key))
	assert.Equal(t, talos.Certs.K8s.Crt, []byte(b.Certs.K8s.Crt))
	assert.Equal(t, talos.Certs.Etcd.Key, []byte(b.Certs.Etcd.Key))
	assert.Equal(t, talos.Certs.K8sAggregator.Crt, []byte(b.Certs.K8sAggregator.Crt))
	assert.Equal(t, talos.Certs.K8sServiceAccount.Key, []byte(b.Certs.K8sServiceAccount.Key))

	saKey, err := certs.ParsePrivateKey(b.Certs.K8sServiceAccount.Key)
	require.NoError(t, err)
	assert.IsType(t, &rsa.PrivateKey{}, saKey)

	// A client certificate issued by nodepki from Talos's OS CA verifies against it.
	crtPEM, _, err := b.NewClientCertificate([]string{"os:admin"}, time.Hour)
	require.NoError(t, err)
	verifyClientCert(t, talos.Certs.OS.Crt, crtPEM)

	// And nodepki writes it back in a form Talos reads identically.
	out, err := b.Marshal()
	require.NoError(t, err)

	var again secrets.Bundle
	require.NoError(t, yaml.Unmarshal(out, &again))
	assert.Equal(t, talos.Certs, again.Certs)
	assert.Equal(t, talos.Secrets, again.Secrets)
}

// TestNodepkiBundleLoadsInTalos checks that Talos's LoadBundle reads a nodepki secrets.yaml and
// that its Validate and client-certificate generation accept it.
func TestNodepkiBundleLoadsInTalos(t *testing.T) {
	t.Parallel()

	for name, newBundle := range map[string]func(t *testing.T) *Bundle{
		"generated": func(t *testing.T) *Bundle { return generated(t) },
		"from kubernetes pki": func(t *testing.T) *Bundle {
			b, err := FromKubernetesPKI(writeKubeadmPKI(t), "")
			require.NoError(t, err)

			return b
		},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()

			b := newBundle(t)
			path := filepath.Join(t.TempDir(), "secrets.yaml")
			require.NoError(t, b.WriteFile(path, false))

			talos, err := secrets.LoadBundle(path)
			require.NoError(t, err)
			require.NoError(t, talos.Validate())

			assert.Equal(t, b.Cluster.ID, talos.Cluster.ID)
			assert.Equal(t, b.Cluster.Secret, talos.Cluster.Secret)
			assert.Equal(t, b.Secrets.BootstrapToken, talos.Secrets.BootstrapToken)
			assert.Equal(t, b.Secrets.SecretboxEncryptionSecret, talos.Secrets.SecretboxEncryptionSecret)
			assert.Equal(t, b.TrustdInfo.Token, talos.TrustdInfo.Token)
			assert.Equal(t, []byte(b.Certs.OS.Crt), talos.Certs.OS.Crt)
			assert.Equal(t, []byte(b.Certs.OS.Key), talos.Certs.OS.Key)
			assert.Equal(t, []byte(b.Certs.K8s.Key), talos.Certs.K8s.Key)
			assert.Equal(t, []byte(b.Certs.Etcd.Crt), talos.Certs.Etcd.Crt)
			assert.Equal(t, []byte(b.Certs.K8sAggregator.Key), talos.Certs.K8sAggregator.Key)
			assert.Equal(t, []byte(b.Certs.K8sServiceAccount.Key), talos.Certs.K8sServiceAccount.Key)

			admin, err := talos.GenerateTalosAPIClientCertificate(role.MakeSet(role.Admin))
			require.NoError(t, err)
			verifyClientCert(t, b.Certs.OS.Crt, admin.Crt)
		})
	}
}

func verifyClientCert(t *testing.T, caPEM, crtPEM []byte) {
	t.Helper()

	ca, err := certs.ParseCertificate(caPEM)
	require.NoError(t, err)

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	pool := x509.NewCertPool()
	pool.AddCert(ca)

	_, err = crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)
	assert.Equal(t, []string{"os:admin"}, crt.Subject.Organization)
}

func TestTalosBundleFileOnDisk(t *testing.T) {
	t.Parallel()

	talos, err := secrets.NewBundle(secrets.NewFixedClock(time.Now()), talosconfig.TalosVersion1_3)
	require.NoError(t, err)

	data, err := yaml.Marshal(talos)
	require.NoError(t, err)

	path := filepath.Join(t.TempDir(), "secrets.yaml")
	require.NoError(t, os.WriteFile(path, data, 0o600))

	b, err := Load(path)
	require.NoError(t, err, "a bundle of an older contract (ECDSA service-account key) loads too")
	assert.Equal(t, talos.Certs.K8sServiceAccount.Key, []byte(b.Certs.K8sServiceAccount.Key))
}
