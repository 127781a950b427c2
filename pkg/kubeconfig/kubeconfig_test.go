package kubeconfig_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
)

func newCA(t *testing.T) *certs.CA {
	t.Helper()

	crt, key, err := certs.NewRootCA(certs.RootKubernetes)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(t, err)

	return ca
}

func clientCertificate(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()

	cfg, err := clientcmd.Load(data)
	require.NoError(t, err)

	auth := cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo]
	require.NotNil(t, auth)

	crt, err := certs.ParseCertificate(auth.ClientCertificateData)
	require.NoError(t, err)

	return crt
}

func TestIssueSpecs(t *testing.T) {
	t.Parallel()

	ca := newCA(t)
	now := time.Now()

	for _, tc := range []struct {
		spec     kubeconfig.Spec
		context  string
		cn       string
		orgs     []string
		notAfter time.Time
	}{
		{kubeconfig.Admin("demo", "https://cp.demo.test:6443", ca.CrtPEM, 48*time.Hour), "admin@demo", "admin", []string{"system:masters"}, now.Add(48 * time.Hour)},
		{kubeconfig.Admin("demo", "https://cp.demo.test:6443", ca.CrtPEM, 20*certs.CALifetime), "admin@demo", "admin", []string{"system:masters"}, ca.Crt.NotAfter},
		{kubeconfig.ControllerManager("demo", "https://localhost:6443", ca.CrtPEM), "system:kube-controller-manager@demo", "system:kube-controller-manager", nil, now.Add(kubeconfig.ComponentLifetime)},
		{kubeconfig.Scheduler("demo", "https://localhost:6443", ca.CrtPEM), "system:kube-scheduler@demo", "system:kube-scheduler", nil, now.Add(kubeconfig.ComponentLifetime)},
	} {
		data, err := kubeconfig.Issue(ca, tc.spec, now)
		require.NoError(t, err)

		cfg, err := clientcmd.Load(data)
		require.NoError(t, err)
		assert.Equal(t, tc.context, cfg.CurrentContext)
		assert.Equal(t, "demo", cfg.Contexts[tc.context].Cluster)
		assert.Equal(t, tc.spec.Server, cfg.Clusters["demo"].Server)

		crt := clientCertificate(t, data)
		assert.Equal(t, tc.cn, crt.Subject.CommonName)
		assert.Equal(t, tc.orgs, crt.Subject.Organization)
		assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, crt.ExtKeyUsage)
		assert.WithinDuration(t, tc.notAfter, crt.NotAfter, time.Second)
		assert.NoError(t, crt.CheckSignatureFrom(ca.Crt))
	}
}

func TestIssueRefusesBadInput(t *testing.T) {
	t.Parallel()

	ca := newCA(t)

	for _, tc := range []struct {
		spec kubeconfig.Spec
		want string
	}{
		{kubeconfig.Admin("", "https://cp:6443", ca.CrtPEM, time.Hour), "cluster.clusterName"},
		{kubeconfig.Admin("demo", "http://cp:6443", ca.CrtPEM, time.Hour), "cluster.controlPlane.endpoint"},
		{kubeconfig.Admin("demo", "https://cp:6443", nil, time.Hour), "CA bundle"},
		{kubeconfig.Admin("demo", "https://cp:6443", ca.CrtPEM, -time.Hour), "not positive"},
	} {
		_, err := kubeconfig.Issue(ca, tc.spec, time.Now())
		assert.ErrorContains(t, err, tc.want)
	}

	_, err := kubeconfig.Issue(ca, kubeconfig.Admin("demo", "https://cp:6443", ca.CrtPEM, time.Hour), ca.Crt.NotAfter.Add(time.Hour))
	assert.ErrorContains(t, err, "expired")
}

// TestAdminKubeconfigAgainstTLSServer uses the kubeconfig as client-go does against a server that
// requires a client certificate of the Kubernetes CA, with the CA bundle holding a second, new CA
// that signs the server certificate (the middle of a rotation).
func TestAdminKubeconfigAgainstTLSServer(t *testing.T) {
	t.Parallel()

	oldCA, newCA := newCA(t), newCA(t)
	bundle := append(append([]byte{}, oldCA.CrtPEM...), newCA.CrtPEM...)

	serverCrt, serverKey, err := newCA.Issue(certs.Profile{
		CommonName: "kube-apiserver", IPAddresses: []net.IP{net.ParseIP("127.0.110.2")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Lifetime: time.Hour,
	}, time.Now())
	require.NoError(t, err)

	pair, err := tls.X509KeyPair(serverCrt, serverKey)
	require.NoError(t, err)

	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(oldCA.Crt)

	ln, err := tls.Listen("tcp", "127.0.110.2:0", &tls.Config{
		Certificates: []tls.Certificate{pair}, ClientCAs: clientCAs, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	})
	require.NoError(t, err)

	// The refused client's handshake would otherwise be logged.
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := r.TLS.PeerCertificates[0]
		_, _ = w.Write([]byte(peer.Subject.CommonName + "/" + peer.Subject.Organization[0]))
	})}

	go srv.Serve(ln) //nolint:errcheck // Serve returns when the test closes the server

	t.Cleanup(func() { _ = srv.Close() })

	data, err := kubeconfig.Issue(oldCA, kubeconfig.Admin("demo", "https://"+ln.Addr().String(), bundle, time.Hour), time.Now())
	require.NoError(t, err)

	restConfig, err := clientcmd.RESTConfigFromKubeConfig(data)
	require.NoError(t, err)

	client, err := rest.HTTPClientFor(restConfig)
	require.NoError(t, err)

	resp, err := client.Get(restConfig.Host + "/")
	require.NoError(t, err)

	defer resp.Body.Close()

	body := make([]byte, 64)
	n, _ := resp.Body.Read(body)
	assert.Equal(t, "admin/system:masters", string(body[:n]))

	// A kubeconfig whose CA data lacks the server's CA is refused by the client.
	wrong, err := kubeconfig.Issue(oldCA, kubeconfig.Admin("demo", "https://"+ln.Addr().String(), oldCA.CrtPEM, time.Hour), time.Now())
	require.NoError(t, err)

	restConfig, err = clientcmd.RESTConfigFromKubeConfig(wrong)
	require.NoError(t, err)

	client, err = rest.HTTPClientFor(restConfig)
	require.NoError(t, err)

	_, err = client.Get(restConfig.Host + "/")
	assert.ErrorContains(t, err, "certificate signed by unknown authority")
}
