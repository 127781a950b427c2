package kubernetes_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	talosclient "github.com/siderolabs/talos/pkg/machinery/client"
	talosconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/cluster"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
)

// controlPlane is the address of the test's control plane: nodepkid, etcd and kube-apiserver.
const controlPlane = "127.0.111.2"

// TestAPIServerOnNodepkiFiles starts kube-apiserver with nothing but the files nodepkid wrote under
// <state-dir>/secrets/kubernetes (and a real etcd), then uses it with the admin kubeconfigs of
// `nodepkictl kubeconfig` and of Talos's MachineService.Kubeconfig (talosctl kubeconfig).
func TestAPIServerOnNodepkiFiles(t *testing.T) {
	requireTools(t)

	c := startCluster(t, controlPlane)
	filesDir := filepath.Join(c.Nodes[0].StateDir, "secrets", "kubernetes")
	waitFiles(t, filesDir)

	b, err := bundle.Load(filepath.Join(c.Dir, "secrets.yaml"))
	require.NoError(t, err)

	etcdURL := startEtcd(t, b)
	started := time.Now()
	startAPIServer(t, filesDir, etcdURL)

	kubeconfigPath := filepath.Join(t.TempDir(), "kubeconfig")
	out, err := exec.CommandContext(t.Context(), nodepkictl, "--talosconfig", c.Talosconfig, "-n", controlPlane,
		"kubeconfig", kubeconfigPath, "--merge=false").CombinedOutput()
	require.NoError(t, err, "%s", out)

	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfigPath)
	require.NoError(t, err)
	require.Equal(t, "https://"+controlPlane+":6443", restConfig.Host)

	waitReady(t, restConfig)
	t.Logf("kube-apiserver ready %s after start", time.Since(started).Round(time.Millisecond))

	t.Run("client-go lists namespaces with the nodepkictl kubeconfig", func(t *testing.T) {
		requireNamespaces(t, restConfig)
	})

	t.Run("kubectl with the nodepkictl kubeconfig", func(t *testing.T) {
		out, err := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", kubeconfigPath, "get", "namespaces", "-o", "name").CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "namespace/kube-system")

		out, err = exec.CommandContext(t.Context(), kubectl, "--kubeconfig", kubeconfigPath, "auth", "whoami",
			"-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}").CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "admin ")
		assert.Contains(t, string(out), "system:masters")

		out, err = exec.CommandContext(t.Context(), kubectl, "--kubeconfig", kubeconfigPath, "get", "--raw", "/readyz").CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Equal(t, "ok", string(out))
	})

	t.Run("talosctl kubeconfig: Talos's client gets a kubeconfig that works", func(t *testing.T) {
		cfg, err := talosconfig.Open(c.Talosconfig)
		require.NoError(t, err)

		cl, err := talosclient.New(t.Context(), talosclient.WithConfig(cfg))
		require.NoError(t, err)

		t.Cleanup(func() { cl.Close() })

		data, err := cl.Kubeconfig(talosclient.WithNodes(t.Context(), controlPlane))
		require.NoError(t, err)

		fromTalos, err := clientcmd.RESTConfigFromKubeConfig(data)
		require.NoError(t, err)
		requireNamespaces(t, fromTalos)
	})

	t.Run("the serving certificate is nodepki's and verifies against ca.crt", func(t *testing.T) {
		caFile := filepath.Join(filesDir, kubepki.ClientCAFile)

		roots := x509.NewCertPool()
		ca, err := os.ReadFile(caFile)
		require.NoError(t, err)
		require.True(t, roots.AppendCertsFromPEM(ca))

		served := servedCertificate(t, roots)

		onDisk, err := os.ReadFile(filepath.Join(filesDir, kubepki.ServingCertFile))
		require.NoError(t, err)

		want, err := certs.ParseCertificate(onDisk)
		require.NoError(t, err)
		assert.True(t, want.Equal(served), "kube-apiserver serves apiserver.crt")
		assert.Contains(t, served.DNSNames, "kubernetes.default.svc.cluster.local")

		if _, err := exec.LookPath("openssl"); err != nil {
			t.Skip("openssl is not installed")
		}

		out, err := exec.CommandContext(t.Context(), "openssl", "s_client", "-connect", controlPlane+":6443",
			"-CAfile", caFile, "-verify_return_error").CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "Verify return code: 0 (ok)")
	})

	t.Run("APIServerFiles records the files", func(t *testing.T) {
		out, err := exec.CommandContext(t.Context(), nodepkictl, "--talosconfig", c.Talosconfig, "-n", controlPlane,
			"get", "apiserverfiles", "-o", "yaml").CombinedOutput()
		require.NoError(t, err, "%s", out)
		assert.Contains(t, string(out), "dir: "+filesDir)
		assert.Contains(t, string(out), "name: "+kubepki.ServingCertFile)
	})

	proxyClient := func(crtFile, keyFile string) *rest.Config {
		return &rest.Config{
			Host: restConfig.Host,
			TLSClientConfig: rest.TLSClientConfig{
				CAData:   restConfig.CAData,
				CertFile: crtFile,
				KeyFile:  keyFile,
			},
			WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
				return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
					req = req.Clone(req.Context())
					req.Header.Set("X-Remote-User", "alice")
					req.Header.Set("X-Remote-Group", "system:masters")

					return rt.RoundTrip(req)
				})
			},
		}
	}

	t.Run("the requestheader path: front-proxy-client with X-Remote-User", func(t *testing.T) {
		requireWhoami(t, proxyClient(filepath.Join(filesDir, kubepki.ProxyClientCertFile), filepath.Join(filesDir, kubepki.ProxyClientKeyFile)), "alice")
	})

	// An aggregator CA rotation by hand: kube-apiserver reloads front-proxy-ca.crt by itself.
	t.Run("an aggregator CA rotation reaches the requestheader path without a restart", func(t *testing.T) {
		// The front-proxy client pair of the old CA, kept aside as a proxy that was not updated.
		oldPair := t.TempDir()
		for _, name := range []string{kubepki.ProxyClientCertFile, kubepki.ProxyClientKeyFile} {
			data, err := os.ReadFile(filepath.Join(filesDir, name))
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(filepath.Join(oldPair, name), data, 0o600))
		}

		oldProxy := proxyClient(filepath.Join(oldPair, kubepki.ProxyClientCertFile), filepath.Join(oldPair, kubepki.ProxyClientKeyFile))

		newCrt, newKey, err := certs.NewRootCA(certs.RootAggregator)
		require.NoError(t, err)

		newCA, err := certs.LoadCA(newCrt, newKey)
		require.NoError(t, err)

		oldCA := base64.StdEncoding.EncodeToString(b.Certs.K8sAggregator.Crt)

		// Accept, then issue with the new CA: the reissued front-proxy-client pair is accepted.
		step := time.Now()
		patch(t, c, fmt.Sprintf(`[{"op": "add", "path": "/cluster/acceptedAggregatorCAs", "value": [{"crt": %q}]}]`, base64.StdEncoding.EncodeToString(newCrt)))
		patch(t, c, fmt.Sprintf(`[{"op": "replace", "path": "/cluster/aggregatorCA", "value": {"crt": %q, "key": %q}}, {"op": "replace", "path": "/cluster/acceptedAggregatorCAs", "value": [{"crt": %q}]}]`,
			base64.StdEncoding.EncodeToString(newCrt), base64.StdEncoding.EncodeToString(newKey), oldCA))

		require.EventuallyWithT(t, func(c *assert.CollectT) {
			data, err := os.ReadFile(filepath.Join(filesDir, kubepki.ProxyClientCertFile))
			if !assert.NoError(c, err) {
				return
			}

			crt, err := certs.ParseCertificate(data)
			if assert.NoError(c, err) {
				assert.NoError(c, crt.CheckSignatureFrom(newCA.Crt))
			}
		}, 90*time.Second, 200*time.Millisecond)

		requireWhoami(t, proxyClient(filepath.Join(filesDir, kubepki.ProxyClientCertFile), filepath.Join(filesDir, kubepki.ProxyClientKeyFile)), "alice")
		requireWhoami(t, oldProxy, "alice")
		t.Logf("switch: the front-proxy-client pair of the new CA is accepted %s after the patches", time.Since(step).Round(time.Millisecond))

		// Retire the old CA: the old pair is refused.
		step = time.Now()
		patch(t, c, `[{"op": "remove", "path": "/cluster/acceptedAggregatorCAs"}]`)

		clientset, err := kubernetes.NewForConfig(oldProxy)
		require.NoError(t, err)

		require.EventuallyWithT(t, func(c *assert.CollectT) {
			_, err := clientset.AuthenticationV1().SelfSubjectReviews().Create(t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
			assert.True(c, apierrors.IsUnauthorized(err), "old front-proxy-client: %v", err)
		}, 90*time.Second, 200*time.Millisecond)
		t.Logf("retire: the old front-proxy-client pair is refused %s after the patch", time.Since(step).Round(time.Millisecond))

		requireWhoami(t, proxyClient(filepath.Join(filesDir, kubepki.ProxyClientCertFile), filepath.Join(filesDir, kubepki.ProxyClientKeyFile)), "alice")
	})

	// A Kubernetes CA rotation by hand, through machine config patches; kube-apiserver is never
	// restarted: it reloads ca.crt and its serving pair by itself.
	t.Run("a Kubernetes CA rotation reaches kube-apiserver without a restart", func(t *testing.T) {
		oldCA := base64.StdEncoding.EncodeToString(b.Certs.K8s.Crt)

		newCrt, newKey, err := certs.NewRootCA(certs.RootKubernetes)
		require.NoError(t, err)

		newCA, err := certs.LoadCA(newCrt, newKey)
		require.NoError(t, err)

		oldKubeconfig := kubeconfigPath

		// 1. Accept the new CA: ca.crt holds both, a client certificate of the new CA is accepted.
		step := time.Now()
		patch(t, c, fmt.Sprintf(`[{"op": "add", "path": "/cluster/acceptedCAs", "value": [{"crt": %q}]}]`, base64.StdEncoding.EncodeToString(newCrt)))

		crt, key := issueClient(t, newCA, "new-admin", "system:masters")

		withNewClient := rest.CopyConfig(restConfig)
		withNewClient.CertData, withNewClient.KeyData = crt, key
		requireWhoami(t, withNewClient, "new-admin")
		t.Logf("accept: a client certificate of the new CA is accepted %s after the patch", time.Since(step).Round(time.Millisecond))

		// 2. Issue with the new CA, the old one still accepted: kube-apiserver serves the reissued
		// pair. Clients verify it with CA data that has the new CA, as in a fresh nodepkictl
		// kubeconfig; the old client certificate is still accepted.
		step = time.Now()
		patch(t, c, fmt.Sprintf(`[{"op": "replace", "path": "/cluster/ca", "value": {"crt": %q, "key": %q}}, {"op": "replace", "path": "/cluster/acceptedCAs", "value": [{"crt": %q}]}]`,
			base64.StdEncoding.EncodeToString(newCrt), base64.StdEncoding.EncodeToString(newKey), oldCA))

		newRoots := x509.NewCertPool()
		newRoots.AddCert(newCA.Crt)

		require.EventuallyWithT(t, func(c *assert.CollectT) {
			served, err := fetchServedCertificate(newRoots)
			if assert.NoError(c, err) {
				assert.NoError(c, served.CheckSignatureFrom(newCA.Crt))
			}
		}, 90*time.Second, 200*time.Millisecond)
		t.Logf("switch: kube-apiserver serves the certificate of the new CA %s after the patch", time.Since(step).Round(time.Millisecond))

		newKubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
		out, err := exec.CommandContext(t.Context(), nodepkictl, "--talosconfig", c.Talosconfig, "-n", controlPlane,
			"kubeconfig", newKubeconfig, "--merge=false").CombinedOutput()
		require.NoError(t, err, "%s", out)

		fresh, err := clientcmd.BuildConfigFromFlags("", newKubeconfig)
		require.NoError(t, err)
		requireWhoami(t, fresh, "admin")

		// The old client certificate is still accepted (the old CA is still in ca.crt).
		oldClient, err := clientcmd.BuildConfigFromFlags("", oldKubeconfig)
		require.NoError(t, err)
		oldClient.CAData = fresh.CAData
		requireWhoami(t, oldClient, "admin")

		// 3. Retire the old CA: the old client certificate is refused, the new kubeconfig works.
		step = time.Now()
		patch(t, c, `[{"op": "remove", "path": "/cluster/acceptedCAs"}]`)

		clientset, err := kubernetes.NewForConfig(oldClient)
		require.NoError(t, err)

		require.EventuallyWithT(t, func(c *assert.CollectT) {
			_, err := clientset.AuthenticationV1().SelfSubjectReviews().Create(t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
			assert.True(c, apierrors.IsUnauthorized(err), "old client certificate: %v", err)
		}, 90*time.Second, 200*time.Millisecond)
		t.Logf("retire: the old client certificate is refused %s after the patch", time.Since(step).Round(time.Millisecond))

		requireWhoami(t, fresh, "admin")
	})
}

// patch applies an RFC 6902 patch to the machine config of the control plane.
func patch(t *testing.T, c *cluster.Cluster, jsonPatch string) {
	t.Helper()

	out, err := exec.CommandContext(t.Context(), nodepkictl, "--talosconfig", c.Talosconfig, "-n", controlPlane,
		"patch", "machineconfig", "--patch", jsonPatch).CombinedOutput()
	require.NoError(t, err, "%s", out)
}

// requireWhoami waits until a SelfSubjectReview with cfg's credentials names user.
func requireWhoami(t *testing.T, cfg *rest.Config, user string) {
	t.Helper()

	clientset, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		review, err := clientset.AuthenticationV1().SelfSubjectReviews().Create(t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if assert.NoError(c, err) {
			assert.Equal(c, user, review.Status.UserInfo.Username)
		}
	}, 90*time.Second, 200*time.Millisecond)
}

// startCluster creates a local cluster of one control plane; it is destroyed when the test ends.
func startCluster(t *testing.T, address string) *cluster.Cluster {
	t.Helper()

	c, err := cluster.Create(t.Context(), cluster.Options{
		Name:          "kubetest",
		ControlPlanes: 1,
		Dir:           filepath.Join(t.TempDir(), "cluster"),
		Daemon:        nodepkid,
		FirstAddress:  netip.MustParseAddr(address),
		ReadyTimeout:  30 * time.Second,
	})
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				for _, n := range c.Nodes {
					if log, err := os.ReadFile(n.Log); err == nil {
						t.Logf("log of %s:\n%s", n.Name, log)
					}
				}
			}

			require.NoError(t, c.Destroy())
		})
	}

	require.NoError(t, err)

	return c
}

// waitFiles waits until nodepkid has written every file kube-apiserver's flags name.
func waitFiles(t *testing.T, dir string) {
	t.Helper()

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, flag := range kubepki.APIServerFlags(dir) {
			_, path, _ := strings.Cut(flag, "=")
			_, err := os.Stat(path)
			assert.NoError(c, err)
		}
	}, 30*time.Second, 100*time.Millisecond)
}

// startEtcd runs a single etcd member whose serving pair is issued by the cluster's etcd CA and
// which requires client certificates of that CA, as nodepki's etcd members do.
func startEtcd(t *testing.T, b *bundle.Bundle) string {
	t.Helper()

	ca, err := certs.LoadCA(b.Certs.Etcd.Crt, b.Certs.Etcd.Key)
	require.NoError(t, err)

	crt, key, err := ca.Issue(certs.Profile{
		CommonName:  "etcd",
		IPAddresses: []net.IP{net.ParseIP(controlPlane)},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		Lifetime:    time.Hour,
	}, time.Now())
	require.NoError(t, err)

	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, data, 0o600))

		return path
	}

	clientURL, peerURL := "https://"+controlPlane+":2379", "http://"+controlPlane+":2380"

	startProcess(t, "etcd", etcd,
		"--name", "etcd",
		"--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "etcd="+peerURL,
		"--cert-file", write("server.crt", crt), "--key-file", write("server.key", key),
		"--client-cert-auth", "--trusted-ca-file", write("ca.crt", b.Certs.Etcd.Crt),
	)

	return clientURL
}

// startAPIServer runs kube-apiserver with the command line of pkg/kubernetes for the files in dir.
func startAPIServer(t *testing.T, dir, etcdURL string) {
	t.Helper()

	cfg := kubepki.APIServerConfig{
		Address:              netip.MustParseAddr(controlPlane),
		PKIDir:               dir,
		EtcdServers:          []string{etcdURL},
		ServiceAccountIssuer: "https://" + controlPlane + ":6443",
	}

	args, err := cfg.Args()
	require.NoError(t, err)

	startProcess(t, "kube-apiserver", kubeAPIServer, args...)
}

// startProcess runs a process until the test ends, printing its output if the test fails.
func startProcess(t *testing.T, name, binary string, args ...string) {
	t.Helper()

	logPath := filepath.Join(t.TempDir(), name+".log")
	logFile, err := os.Create(logPath)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.WaitDelay = 10 * time.Second
	require.NoError(t, cmd.Start())

	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		_ = logFile.Close()

		if t.Failed() {
			if data, err := os.ReadFile(logPath); err == nil {
				t.Logf("log of %s:\n%s", name, data)
			}
		}
	})
}

// waitReady waits for /readyz to answer ok to the kubeconfig's client.
func waitReady(t *testing.T, cfg *rest.Config) {
	t.Helper()

	client, err := rest.HTTPClientFor(cfg)
	require.NoError(t, err)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		resp, err := client.Get(cfg.Host + "/readyz")
		if !assert.NoError(c, err) {
			return
		}

		resp.Body.Close()
		assert.Equal(c, http.StatusOK, resp.StatusCode)
	}, 90*time.Second, 200*time.Millisecond)
}

// requireNamespaces lists namespaces with client-go; kube-apiserver creates the system ones at start.
func requireNamespaces(t *testing.T, cfg *rest.Config) {
	t.Helper()

	clientset, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		list, err := clientset.CoreV1().Namespaces().List(t.Context(), metav1.ListOptions{})
		if !assert.NoError(c, err) {
			return
		}

		var names []string
		for _, ns := range list.Items {
			names = append(names, ns.Name)
		}

		assert.Subset(c, names, []string{"default", "kube-system", "kube-public"})
	}, 30*time.Second, 200*time.Millisecond)
}

// servedCertificate is the leaf kube-apiserver presents, verified against roots for the address.
func servedCertificate(t *testing.T, roots *x509.CertPool) *x509.Certificate {
	t.Helper()

	crt, err := fetchServedCertificate(roots)
	require.NoError(t, err)

	return crt
}

func fetchServedCertificate(roots *x509.CertPool) (*x509.Certificate, error) {
	conn, err := tls.Dial("tcp", controlPlane+":6443", &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
	if err != nil {
		return nil, err
	}

	defer conn.Close()

	return conn.ConnectionState().PeerCertificates[0], nil
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
