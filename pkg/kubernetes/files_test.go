package kubernetes_test

import (
	"crypto/x509"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubernetes"
)

func newCA(t *testing.T, root string) *certs.CA {
	t.Helper()

	crt, key, err := certs.NewRootCA(root)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(t, err)

	return ca
}

func issue(t *testing.T, ca *certs.CA, cn string, usage x509.ExtKeyUsage, ips ...net.IP) kubernetes.KeyPair {
	t.Helper()

	crt, key, err := ca.Issue(certs.Profile{
		CommonName: cn, IPAddresses: ips, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, Lifetime: time.Hour,
	}, time.Now())
	require.NoError(t, err)

	return kubernetes.KeyPair{Certificate: string(crt), Key: string(key)}
}

// testPKI is a consistent set of kube-apiserver credentials in the middle of a Kubernetes CA
// rotation: two Kubernetes CAs accepted, the serving pair from the new one.
func testPKI(t *testing.T) (kubernetes.APIServerPKI, *certs.CA) {
	t.Helper()

	oldK8s, k8s, aggregator, etcd := newCA(t, certs.RootKubernetes), newCA(t, certs.RootKubernetes), newCA(t, certs.RootAggregator), newCA(t, certs.RootEtcd)

	saKey, err := certs.NewServiceAccountKey()
	require.NoError(t, err)

	saPub, err := certs.PublicKeyPEM(saKey)
	require.NoError(t, err)

	oldSAKey, err := certs.NewServiceAccountKey()
	require.NoError(t, err)

	oldSAPub, err := certs.PublicKeyPEM(oldSAKey)
	require.NoError(t, err)

	return kubernetes.APIServerPKI{
		ClientCAs:                []string{string(oldK8s.CrtPEM), string(k8s.CrtPEM)},
		Serving:                  issue(t, k8s, "kube-apiserver", x509.ExtKeyUsageServerAuth, net.ParseIP("127.0.110.2")),
		KubeletClient:            issue(t, k8s, "apiserver-kubelet-client", x509.ExtKeyUsageClientAuth),
		AggregatorCAs:            []string{string(aggregator.CrtPEM)},
		ProxyClient:              issue(t, aggregator, "front-proxy-client", x509.ExtKeyUsageClientAuth),
		ServiceAccountKey:        string(saKey),
		ServiceAccountPublicKeys: []string{string(oldSAPub), string(saPub)},
		EtcdCAs:                  []string{string(etcd.CrtPEM)},
		EtcdClient:               issue(t, etcd, "kube-apiserver", x509.ExtKeyUsageClientAuth),
	}, k8s
}

func TestAPIServerFiles(t *testing.T) {
	t.Parallel()

	p, _ := testPKI(t)

	files, err := p.Files()
	require.NoError(t, err)

	assert.Len(t, files, 13)
	assert.Equal(t, p.ClientCAs[0]+p.ClientCAs[1], string(files[kubernetes.ClientCAFile]))
	assert.Equal(t, p.Serving.Certificate, string(files[kubernetes.ServingCertFile]))
	assert.Equal(t, p.Serving.Key, string(files[kubernetes.ServingKeyFile]))
	assert.Equal(t, p.AggregatorCAs[0], string(files[kubernetes.RequestHeaderCAFile]))
	assert.Equal(t, p.ProxyClient.Certificate, string(files[kubernetes.ProxyClientCertFile]))
	assert.Equal(t, p.ServiceAccountKey, string(files[kubernetes.ServiceAccountKeyFile]))
	assert.Equal(t, p.ServiceAccountPublicKeys[0]+p.ServiceAccountPublicKeys[1], string(files[kubernetes.ServiceAccountPublicKeysFile]))
	assert.Equal(t, p.EtcdCAs[0], string(files[kubernetes.EtcdCAFile]))
	assert.Equal(t, p.EtcdClient.Key, string(files[kubernetes.EtcdClientKeyFile]))

	// Every flag names one of the files.
	for _, flag := range kubernetes.APIServerFlags("/state/secrets/kubernetes") {
		_, path, ok := strings.Cut(flag, "=")
		require.True(t, ok, flag)

		name, ok := strings.CutPrefix(path, "/state/secrets/kubernetes/")
		require.True(t, ok, flag)
		assert.Contains(t, files, name, flag)
	}
}

func TestAPIServerFilesRefusesInconsistentPKI(t *testing.T) {
	t.Parallel()

	stranger := newCA(t, certs.RootKubernetes)

	for _, tc := range []struct {
		name  string
		spoil func(p *kubernetes.APIServerPKI)
		want  []string
	}{
		{"serving pair of a CA clients do not trust", func(p *kubernetes.APIServerPKI) {
			p.Serving = issue(t, stranger, "kube-apiserver", x509.ExtKeyUsageServerAuth)
		}, []string{"apiserver.crt (serving): issued by", "not in ca.crt"}},
		{"proxy client of the Kubernetes CA", func(p *kubernetes.APIServerPKI) {
			p.ProxyClient = issue(t, stranger, "front-proxy-client", x509.ExtKeyUsageClientAuth)
		}, []string{"front-proxy-client.crt (front-proxy client)", "not in front-proxy-ca.crt"}},
		{
			"key of another certificate", func(p *kubernetes.APIServerPKI) { p.EtcdClient.Key = p.Serving.Key },
			[]string{"apiserver-etcd-client.crt (etcd client): the key does not match the certificate"},
		},
		{
			"pair not issued yet", func(p *kubernetes.APIServerPKI) { p.KubeletClient = kubernetes.KeyPair{} },
			[]string{"apiserver-kubelet-client.crt (kubelet client): not issued yet"},
		},
		{
			"no aggregator CA", func(p *kubernetes.APIServerPKI) { p.AggregatorCAs = nil },
			[]string{"front-proxy-ca.crt: no aggregator CA"},
		},
		{
			"signing key not accepted", func(p *kubernetes.APIServerPKI) { p.ServiceAccountPublicKeys = p.ServiceAccountPublicKeys[:1] },
			[]string{"sa.pub: the signing key's public key is not among the accepted service-account keys"},
		},
		{
			"garbage CA", func(p *kubernetes.APIServerPKI) { p.EtcdCAs = []string{"not pem"} },
			[]string{"etcd-ca.crt: etcd CA 0"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			p, _ := testPKI(t)
			tc.spoil(&p)

			files, err := p.Files()
			require.Error(t, err)
			assert.Nil(t, files)

			for _, want := range tc.want {
				assert.ErrorContains(t, err, want)
			}
		})
	}
}
