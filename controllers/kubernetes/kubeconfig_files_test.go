package kubernetes_test

import (
	"crypto/x509"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlkubernetes "github.com/nodepki/nodepki/controllers/kubernetes"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/kubernetes"
)

const kubeconfigNode = "127.0.110.6"

func runKubeconfigFiles(t *testing.T, dir string) *ctest.Env {
	t.Helper()

	return ctest.Run(t,
		ctrlpki.NewRootSecretsController(),
		ctrlpki.NewAcceptedCAsController(),
		&ctrlkubernetes.KubeconfigFilesController{Dir: dir, Address: netip.MustParseAddr(kubeconfigNode)},
	)
}

// clientOf reads a kubeconfig file: its server, CA data and client certificate.
func clientOf(t require.TestingT, path string) (server string, caData []byte, crt *x509.Certificate) {
	data, err := os.ReadFile(path)
	require.NoError(t, err)

	cfg, err := clientcmd.RESTConfigFromKubeConfig(data)
	require.NoError(t, err)

	crt, err = certs.ParseCertificate(cfg.CertData)
	require.NoError(t, err)

	return cfg.Host, cfg.CAData, crt
}

func TestKubeconfigFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets", "kubernetes")
	env := runKubeconfigFiles(t, dir)
	secrets := ctest.NewSecrets(t)
	doc := ctest.ControlPlane(secrets)
	env.SetMachineConfig(t, doc)

	var first kubernetes.KubeconfigFilesSpec

	rtestutils.AssertResource(env.Ctx, t, env.State, kubernetes.KubeconfigFilesID, func(res *kubernetes.KubeconfigFiles, a *assert.Assertions) {
		first = *res.TypedSpec()
		a.Equal("https://"+kubeconfigNode+":6443", first.Server)
		a.Equal([]string{secrets.Kubernetes.Fingerprint(t)}, first.CAFingerprints)
		a.Len(first.Kubeconfigs, 3)
	})

	ca, err := certs.LoadCA(secrets.Kubernetes.Crt, secrets.Kubernetes.Key)
	require.NoError(t, err)

	for _, tc := range []struct {
		file, cn, o string
	}{
		{kubepki.ControllerManagerKubeconfigFile, "system:kube-controller-manager", "system:kube-controller-manager"},
		{kubepki.SchedulerKubeconfigFile, "system:kube-scheduler", "system:kube-scheduler"},
		{kubepki.AdminKubeconfigFile, "talos:admin", "system:masters"},
	} {
		path := filepath.Join(dir, tc.file)

		info, err := os.Stat(path)
		require.NoError(t, err, tc.file)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), tc.file)

		server, caData, crt := clientOf(t, path)
		assert.Equal(t, "https://"+kubeconfigNode+":6443", server, tc.file)
		assert.Equal(t, string(secrets.Kubernetes.Crt), string(caData), "%s: the CA data is the accepted bundle", tc.file)
		assert.Equal(t, tc.cn, crt.Subject.CommonName, tc.file)
		assert.Equal(t, []string{tc.o}, crt.Subject.Organization, tc.file)
		assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, crt.ExtKeyUsage, tc.file)
		assert.NoError(t, crt.CheckSignatureFrom(ca.Crt), tc.file)
		assert.InDelta(t, (365 * 24 * time.Hour).Seconds(), crt.NotAfter.Sub(crt.NotBefore).Seconds(), 60, tc.file)
	}

	// A second Kubernetes CA accepted: the CA data follows; the kubeconfigs are reissued.
	next := ctest.NewCA(t, certs.RootKubernetes)
	doc.Cluster.AcceptedCAs = append(doc.Cluster.AcceptedCAs, next.Accepted())
	env.SetMachineConfig(t, doc)

	rtestutils.AssertResource(env.Ctx, t, env.State, kubernetes.KubeconfigFilesID, func(res *kubernetes.KubeconfigFiles, a *assert.Assertions) {
		a.Len(res.TypedSpec().CAFingerprints, 2)

		for i, k := range res.TypedSpec().Kubeconfigs {
			a.NotEqual(first.Kubeconfigs[i].Digest, k.Digest, k.Name)
		}
	})

	_, caData, _ := clientOf(t, filepath.Join(dir, kubepki.AdminKubeconfigFile))
	bundle, err := certs.ParseCertificates(caData)
	require.NoError(t, err)
	assert.Len(t, bundle, 2)
}

// TestKubeconfigFilesRenewal: with a 4 s Kubernetes lifetime, the kubeconfigs are reissued at
// half their life, without any event.
func TestKubeconfigFilesRenewal(t *testing.T) {
	dir := t.TempDir()
	env := runKubeconfigFiles(t, dir)
	doc := ctest.ControlPlane(ctest.NewSecrets(t))
	doc.Machine.CertificateLifetimes = &machineconfig.CertificateLifetimes{Kubernetes: machineconfig.Duration(4 * time.Second)}
	env.SetMachineConfig(t, doc)

	var first *x509.Certificate

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		if _, err := os.Stat(filepath.Join(dir, kubepki.SchedulerKubeconfigFile)); assert.NoError(c, err) {
			_, _, first = clientOf(t, filepath.Join(dir, kubepki.SchedulerKubeconfigFile))
		}
	}, 10*time.Second, 50*time.Millisecond)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, _, crt := clientOf(t, filepath.Join(dir, kubepki.SchedulerKubeconfigFile))
		if assert.NotEqual(c, first.SerialNumber, crt.SerialNumber) {
			// Reissued at half its life (2 s), not at once.
			assert.GreaterOrEqual(c, crt.NotBefore.Sub(first.NotBefore), time.Second)
		}
	}, 10*time.Second, 100*time.Millisecond)
}
