package kubernetes_test

import (
	stdx509 "crypto/x509"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlkubernetes "github.com/nodepki/nodepki/controllers/kubernetes"
	ctrlnetwork "github.com/nodepki/nodepki/controllers/network"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/kubernetes"
	"github.com/nodepki/nodepki/resources/pki"
)

func runAPIServerFiles(t *testing.T, dir string) *ctest.Env {
	t.Helper()

	return ctest.Run(t,
		&ctrlnetwork.NodeAddressesController{Addresses: []netip.Addr{netip.MustParseAddr("127.0.110.2")}},
		ctrlpki.NewRootSecretsController(),
		ctrlpki.NewAcceptedCAsController(),
		ctrlpki.NewCertSANsController("cp-1"),
		ctrlpki.NewCertificateRequestsController(ctrlpki.CertificateRequestsOptions{Hostname: "cp-1"}),
		ctrlpki.NewNodeCertificatesController(ctrlpki.NodeCertificatesOptions{}),
		ctrlkubernetes.NewAPIServerFilesController(dir),
	)
}

var allFiles = []string{
	kubepki.ClientCAFile, kubepki.ServingCertFile, kubepki.ServingKeyFile, kubepki.KubeletClientCertFile, kubepki.KubeletClientKeyFile,
	kubepki.RequestHeaderCAFile, kubepki.ProxyClientCertFile, kubepki.ProxyClientKeyFile, kubepki.ServiceAccountKeyFile,
	kubepki.ServiceAccountPublicKeysFile, kubepki.EtcdCAFile, kubepki.EtcdClientCertFile, kubepki.EtcdClientKeyFile,
}

func TestAPIServerFilesLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets", "kubernetes")
	env := runAPIServerFiles(t, dir)
	secrets := ctest.NewSecrets(t)
	env.SetMachineConfig(t, ctest.ControlPlane(secrets))

	rtestutils.AssertResource(env.Ctx, t, env.State, kubernetes.APIServerFilesID, func(res *kubernetes.APIServerFiles, a *assert.Assertions) {
		spec := res.TypedSpec()
		a.Equal(dir, spec.Dir)
		a.Equal([]string{secrets.Kubernetes.Fingerprint(t)}, spec.ClientCAFingerprints)
		a.Equal([]string{secrets.Aggregator.Fingerprint(t)}, spec.RequestHeaderCAFingerprints)
		a.Equal([]string{secrets.Etcd.Fingerprint(t)}, spec.EtcdCAFingerprints)
		a.Len(spec.Files, len(allFiles))
	})

	info, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm())

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, len(allFiles), "no CA key, no leftovers")

	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err, name)

		info, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), name)

		return data
	}

	for _, name := range allFiles {
		read(name)
	}

	assert.Equal(t, string(secrets.Kubernetes.Crt), string(read(kubepki.ClientCAFile)), "the client CA bundle holds the CA certificate, not its key")
	assert.Equal(t, string(secrets.Aggregator.Crt), string(read(kubepki.RequestHeaderCAFile)))
	assert.Equal(t, string(secrets.Etcd.Crt), string(read(kubepki.EtcdCAFile)))
	assert.Equal(t, string(secrets.ServiceAccount), string(read(kubepki.ServiceAccountKeyFile)))

	saPub, err := certs.PublicKeyPEM(secrets.ServiceAccount)
	require.NoError(t, err)
	assert.Equal(t, string(saPub), string(read(kubepki.ServiceAccountPublicKeysFile)))

	verify := func(crtFile, caFile string, eku stdx509.ExtKeyUsage, dns string) {
		pool := stdx509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM(read(caFile)))

		crt, err := certs.ParseCertificate(read(crtFile))
		require.NoError(t, err)

		_, err = crt.Verify(stdx509.VerifyOptions{Roots: pool, DNSName: dns, KeyUsages: []stdx509.ExtKeyUsage{eku}})
		assert.NoError(t, err, "%s verifies against %s", crtFile, caFile)
	}

	verify(kubepki.ServingCertFile, kubepki.ClientCAFile, stdx509.ExtKeyUsageServerAuth, "kubernetes.default.svc")
	verify(kubepki.KubeletClientCertFile, kubepki.ClientCAFile, stdx509.ExtKeyUsageClientAuth, "")
	verify(kubepki.ProxyClientCertFile, kubepki.RequestHeaderCAFile, stdx509.ExtKeyUsageClientAuth, "")
	verify(kubepki.EtcdClientCertFile, kubepki.EtcdCAFile, stdx509.ExtKeyUsageClientAuth, "")
}

// TestAPIServerFilesFollowRotation accepts a second Kubernetes CA and a second service-account
// key: the bundles grow, and only the files that changed are rewritten.
func TestAPIServerFilesFollowRotation(t *testing.T) {
	dir := t.TempDir()
	env := runAPIServerFiles(t, dir)
	secrets := ctest.NewSecrets(t)
	doc := ctest.ControlPlane(secrets)
	env.SetMachineConfig(t, doc)

	var first kubernetes.APIServerFilesSpec

	rtestutils.AssertResource(env.Ctx, t, env.State, kubernetes.APIServerFilesID, func(res *kubernetes.APIServerFiles, a *assert.Assertions) {
		a.NotEmpty(res.TypedSpec().Files)
		first = *res.TypedSpec()
	})

	next := ctest.NewCA(t, certs.RootKubernetes)

	nextSA, err := certs.NewServiceAccountKey()
	require.NoError(t, err)

	nextSAPub, err := certs.PublicKeyPEM(nextSA)
	require.NoError(t, err)

	doc.Cluster.AcceptedCAs = append(doc.Cluster.AcceptedCAs, next.Accepted())
	doc.Cluster.AcceptedServiceAccountKeys = append(doc.Cluster.AcceptedServiceAccountKeys, &machineconfig.Key{Key: nextSAPub})
	env.SetMachineConfig(t, doc)

	rtestutils.AssertResource(env.Ctx, t, env.State, kubernetes.APIServerFilesID, func(res *kubernetes.APIServerFiles, a *assert.Assertions) {
		spec := res.TypedSpec()
		a.ElementsMatch([]string{secrets.Kubernetes.Fingerprint(t), next.Fingerprint(t)}, spec.ClientCAFingerprints)
		a.Len(spec.ServiceAccountKeyFingerprints, 2)
		a.NotEqual(first.Digest(kubepki.ClientCAFile), spec.Digest(kubepki.ClientCAFile))
		a.NotEqual(first.Digest(kubepki.ServiceAccountPublicKeysFile), spec.Digest(kubepki.ServiceAccountPublicKeysFile))

		for _, unchanged := range []string{kubepki.ServingCertFile, kubepki.ProxyClientCertFile, kubepki.EtcdCAFile, kubepki.ServiceAccountKeyFile} {
			a.Equal(first.Digest(unchanged), spec.Digest(unchanged), unchanged)
		}
	})

	bundle, err := os.ReadFile(filepath.Join(dir, kubepki.ClientCAFile))
	require.NoError(t, err)

	crts, err := certs.ParseCertificates(bundle)
	require.NoError(t, err)
	assert.Len(t, crts, 2)
	assert.True(t, slices.ContainsFunc(crts, func(c *stdx509.Certificate) bool { return certs.Fingerprint(c) == next.Fingerprint(t) }))
}

// TestFilesNotOnWorkers runs in a synctest bubble, so that "no files" is checked once the
// controllers have done all they do for a worker's config, not merely before they got to it.
func TestFilesNotOnWorkers(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name  string
		run   func(t *testing.T, dir string) *ctest.Env
		count func(env *ctest.Env) (int, error)
	}{
		{"kube-apiserver files", runAPIServerFiles, func(env *ctest.Env) (int, error) {
			files, err := safe.StateListAll[*kubernetes.APIServerFiles](env.Ctx, env.State)

			return files.Len(), err
		}},
		{"kubeconfigs", runKubeconfigFiles, func(env *ctest.Env) (int, error) {
			files, err := safe.StateListAll[*kubernetes.KubeconfigFiles](env.Ctx, env.State)

			return files.Len(), err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			synctest.Test(t, func(t *testing.T) {
				dir := filepath.Join(t.TempDir(), "kubernetes")
				env := tc.run(t, dir)
				env.SetMachineConfig(t, ctest.Worker(ctest.NewSecrets(t)))

				synctest.Wait()

				// The worker's trust pools exist; the files would need key pairs it never has.
				_, err := safe.StateGetByID[*pki.AcceptedCA](env.Ctx, env.State, pki.RootKubernetes)
				require.NoError(t, err)

				n, err := tc.count(env)
				require.NoError(t, err)
				assert.Zero(t, n)
				assert.NoDirExists(t, dir)
			})
		})
	}
}
