package kubernetes_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
)

// reloadNode is the address of TestWhatKubeAPIServerReloads: its nodepkid, the TLS proxy in
// front of etcd (:2379), kube-apiserver (:6443) and an aggregated API server (:6444).
const reloadNode = "127.0.112.2"

// TestWhatKubeAPIServerReloads finds out which of the files of <state-dir>/secrets/kubernetes
// kube-apiserver v1.34 reloads by itself, which is what decides when nodepkid must restart it
// (pkg/kubernetes StartupFiles, docs/kubernetes.md). kube-apiserver runs on a copy of the files a
// real nodepkid wrote, edited here by hand; its etcd connections go through a TLS proxy of the
// test, which sees each client certificate, can drop every connection and can change the
// certificate it serves; its aggregation layer reaches an aggregated API server of the test, which
// sees the front-proxy client certificate of each request.
//
// A file that is not reloaded is shown with a witness: ca.crt (which kube-apiserver does reload)
// is changed in the same write, and the check runs once the witness change is in effect.
func TestWhatKubeAPIServerReloads(t *testing.T) {
	requireTools(t)

	c := startCluster(t, reloadNode)
	waitFiles(t, filepath.Join(c.Nodes[0].StateDir, "secrets", "kubernetes"))

	b, err := bundle.Load(filepath.Join(c.Dir, "secrets.yaml"))
	require.NoError(t, err)

	pki := t.TempDir()
	require.NoError(t, os.CopyFS(pki, os.DirFS(filepath.Join(c.Nodes[0].StateDir, "secrets", "kubernetes"))))

	etcdCA, err := certs.LoadCA(b.Certs.Etcd.Crt, b.Certs.Etcd.Key)
	require.NoError(t, err)

	proxy := startEtcdProxy(t, etcdCA, startEtcd(t, b))
	apiserver := startRestartableAPIServer(t, pki, "https://"+reloadNode+":2379")

	kubeconfigPath := filepath.Join(t.TempDir(), "kubeconfig")
	out, err := exec.CommandContext(t.Context(), nodepkictl, "--talosconfig", c.Talosconfig, "-n", reloadNode,
		"kubeconfig", kubeconfigPath, "--merge=false").CombinedOutput()
	require.NoError(t, err, "%s", out)

	admin, err := clientcmd.BuildConfigFromFlags("", kubeconfigPath)
	require.NoError(t, err)
	waitReady(t, admin)

	clientset, err := kubernetes.NewForConfig(admin)
	require.NoError(t, err)

	// witness adds a new Kubernetes CA to ca.crt along with the other writes, and waits until a
	// client certificate of that CA is accepted: kube-apiserver has looked at its files since.
	witness := func(t *testing.T, writes map[string][]byte) {
		t.Helper()

		crt, key, err := certs.NewRootCA(certs.RootKubernetes)
		require.NoError(t, err)

		ca, err := certs.LoadCA(crt, key)
		require.NoError(t, err)

		bundle, err := os.ReadFile(filepath.Join(pki, kubepki.ClientCAFile))
		require.NoError(t, err)

		writes[kubepki.ClientCAFile] = append(bundle, crt...)
		writeFiles(t, pki, writes)

		clientCrt, clientKey := issueClient(t, ca, "witness")

		cfg := rest.CopyConfig(admin)
		cfg.CertData, cfg.KeyData = clientCrt, clientKey
		requireWhoami(t, cfg, "witness")
	}

	t.Run("the etcd client pair is reloaded on new connections", func(t *testing.T) {
		crt, key := issueClient(t, etcdCA, "kube-apiserver")

		writeFiles(t, pki, map[string][]byte{kubepki.EtcdClientCertFile: crt, kubepki.EtcdClientKeyFile: key})

		serial := certSerial(t, crt)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			proxy.dropAll()
			assert.True(ct, proxy.sawClient(serial), "kube-apiserver connects to etcd with the new pair")
		}, time.Minute, time.Second)

		waitReady(t, admin)
	})

	t.Run("the front-proxy client pair is reloaded", func(t *testing.T) {
		aggregated := startAggregatedAPIServer(t)
		registerAPIService(t, kubeconfigPath, aggregated.port)

		before := certSerial(t, readFile(t, filepath.Join(pki, kubepki.ProxyClientCertFile)))
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			_, err := clientset.Discovery().RESTClient().Get().AbsPath("/apis/test.nodepki.dev/v1").DoRaw(t.Context())
			assert.NoError(ct, err)
			assert.True(ct, aggregated.sawClient(before), "the aggregated API server is reached with front-proxy-client.crt")
			assert.True(ct, aggregated.sawUser("admin"), "X-Remote-User names the caller")
		}, time.Minute, 500*time.Millisecond)

		aggregatorCA, err := certs.LoadCA(b.Certs.K8sAggregator.Crt, b.Certs.K8sAggregator.Key)
		require.NoError(t, err)

		crt, key := issueClient(t, aggregatorCA, "front-proxy-client")

		writeFiles(t, pki, map[string][]byte{kubepki.ProxyClientCertFile: crt, kubepki.ProxyClientKeyFile: key})

		after := certSerial(t, crt)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			_, err := clientset.Discovery().RESTClient().Get().AbsPath("/apis/test.nodepki.dev/v1").DoRaw(t.Context())
			assert.NoError(ct, err)
			assert.True(ct, aggregated.sawClient(after), "the aggregated API server is reached with the new pair")
		}, 2*time.Minute, 500*time.Millisecond)
	})

	t.Run("sa.key and sa.pub are read only at start", func(t *testing.T) {
		_, err := clientset.CoreV1().ServiceAccounts("default").Create(t.Context(),
			&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "probe"}}, metav1.CreateOptions{})
		require.NoError(t, err)

		oldToken, oldKid := requestToken(t, clientset)

		newKey, err := certs.NewServiceAccountKey()
		require.NoError(t, err)

		newPub, err := certs.PublicKeyPEM(newKey)
		require.NoError(t, err)

		// The old key is gone from both files.
		witness(t, map[string][]byte{kubepki.ServiceAccountKeyFile: newKey, kubepki.ServiceAccountPublicKeysFile: newPub})

		_, kid := requestToken(t, clientset)
		assert.Equal(t, oldKid, kid, "tokens are still signed with the old key: sa.key was not reloaded")
		requireWhoami(t, bearer(admin, oldToken), "system:serviceaccount:default:probe")

		apiserver.restart(t)
		waitReady(t, admin)

		_, kid = requestToken(t, clientset)
		assert.NotEqual(t, oldKid, kid, "after a restart, tokens are signed with the new key")

		_, err = clientsetFor(t, bearer(admin, oldToken)).AuthenticationV1().SelfSubjectReviews().Create(t.Context(),
			&authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		assert.True(t, apierrors.IsUnauthorized(err), "after a restart, a token of the old key is refused: %v", err)
	})

	// Last: it leaves kube-apiserver unable to reach etcd until it is restarted.
	t.Run("etcd-ca.crt is read only at start", func(t *testing.T) {
		crt, key, err := certs.NewRootCA(certs.RootEtcd)
		require.NoError(t, err)

		newCA, err := certs.LoadCA(crt, key)
		require.NoError(t, err)

		// Both CAs in the file, as while an etcd CA rotation accepts the new one; then etcd serves
		// a certificate of the new CA and every connection is dropped.
		witness(t, map[string][]byte{kubepki.EtcdCAFile: append(readFile(t, filepath.Join(pki, kubepki.EtcdCAFile)), crt...)})
		proxy.serveWith(t, newCA)

		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			proxy.dropAll()
			assert.GreaterOrEqual(ct, proxy.refusedSinceServing(), 3, "kube-apiserver refuses the certificate of the new CA")
		}, time.Minute, 500*time.Millisecond)
		assert.Zero(t, proxy.acceptedSinceServing(), "no connection with the new CA's certificate succeeded")

		apiserver.restart(t)
		waitReady(t, admin)
		assert.Positive(t, proxy.acceptedSinceServing(), "after a restart kube-apiserver trusts the new etcd CA")
	})
}

// writeFiles replaces files in dir atomically, each by a rename, as nodepkid does.
func writeFiles(t *testing.T, dir string, files map[string][]byte) {
	t.Helper()

	for name, data := range files {
		tmp := filepath.Join(dir, "."+name+".tmp")
		require.NoError(t, os.WriteFile(tmp, data, 0o600))
		require.NoError(t, os.Rename(tmp, filepath.Join(dir, name)))
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()

	data, err := os.ReadFile(path)
	require.NoError(t, err)

	return data
}

func certSerial(t *testing.T, crtPEM []byte) string {
	t.Helper()

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	return crt.SerialNumber.String()
}

func bearer(cfg *rest.Config, token string) *rest.Config {
	return &rest.Config{Host: cfg.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData}}
}

func clientsetFor(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()

	clientset, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)

	return clientset
}

// requestToken asks the TokenRequest API for a token of default/probe and returns it with the
// key ID of its header (kube-apiserver derives it from the signing key).
func requestToken(t *testing.T, clientset *kubernetes.Clientset) (token, kid string) {
	t.Helper()

	resp, err := clientset.CoreV1().ServiceAccounts("default").CreateToken(t.Context(), "probe",
		&authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	require.NoError(t, err)

	token = resp.Status.Token
	header, _, _ := strings.Cut(token, ".")

	data, err := base64.RawURLEncoding.DecodeString(header)
	require.NoError(t, err)

	var h struct {
		Kid string `json:"kid"`
	}

	require.NoError(t, json.Unmarshal(data, &h))
	require.NotEmpty(t, h.Kid)

	return token, h.Kid
}

// restartableAPIServer is a kube-apiserver the test stops and starts again.
type restartableAPIServer struct {
	args []string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
}

func startRestartableAPIServer(t *testing.T, pki, etcdURL string) *restartableAPIServer {
	t.Helper()

	args, err := kubepki.APIServerConfig{
		Address:              netip.MustParseAddr(reloadNode),
		PKIDir:               pki,
		EtcdServers:          []string{etcdURL},
		ServiceAccountIssuer: "https://" + reloadNode + ":6443",
	}.Args()
	require.NoError(t, err)

	s := &restartableAPIServer{args: args, log: filepath.Join(t.TempDir(), "kube-apiserver.log")}
	s.start(t)

	t.Cleanup(func() {
		s.stop(t)

		if t.Failed() {
			if data, err := os.ReadFile(s.log); err == nil {
				t.Logf("log of kube-apiserver:\n%s", tail(data, 8000))
			}
		}
	})

	return s
}

func (s *restartableAPIServer) start(t *testing.T) {
	t.Helper()

	logFile, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)

	defer logFile.Close()

	s.cmd = exec.Command(kubeAPIServer, s.args...)
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	require.NoError(t, s.cmd.Start())

	done := make(chan struct{})
	s.done = done

	go func(cmd *exec.Cmd) {
		_ = cmd.Wait()

		close(done)
	}(s.cmd)
}

func (s *restartableAPIServer) stop(t *testing.T) {
	t.Helper()

	require.NoError(t, s.cmd.Process.Signal(syscall.SIGTERM))

	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

func (s *restartableAPIServer) restart(t *testing.T) {
	t.Helper()

	s.stop(t)
	s.start(t)
}

// etcdProxy is a TLS proxy in front of etcd: it serves a certificate of the etcd CA (or of
// another CA, serveWith), records the client certificate of each handshake and forwards the
// connection to etcd with a client certificate of its own.
type etcdProxy struct {
	backend   string
	backendTL *tls.Config

	mu       sync.Mutex
	serving  *tls.Certificate
	clients  map[string]bool
	conns    map[net.Conn]struct{}
	accepted int
	refused  int
}

func startEtcdProxy(t *testing.T, ca *certs.CA, backendURL string) *etcdProxy {
	t.Helper()

	clientCrt, clientKey := issueClient(t, ca, "etcd-proxy")

	clientPair, err := tls.X509KeyPair(clientCrt, clientKey)
	require.NoError(t, err)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Crt)

	p := &etcdProxy{
		backend:   strings.TrimPrefix(backendURL, "https://"),
		backendTL: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientPair}, NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12},
		clients:   map[string]bool{},
		conns:     map[net.Conn]struct{}{},
	}
	p.serveWith(t, ca)

	ln, err := net.Listen("tcp", reloadNode+":2379")
	require.NoError(t, err)

	t.Cleanup(func() {
		ln.Close()
		p.dropAll()
	})

	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}

			go p.handle(conn)
		}
	}()

	return p
}

// serveWith makes the proxy serve a certificate of ca from now on, and restarts its counts.
func (p *etcdProxy) serveWith(t *testing.T, ca *certs.CA) {
	t.Helper()

	crt, key, err := ca.Issue(certs.Profile{
		CommonName: "etcd", IPAddresses: []net.IP{net.ParseIP(reloadNode)},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		Lifetime: time.Hour,
	}, time.Now())
	require.NoError(t, err)

	pair, err := tls.X509KeyPair(crt, key)
	require.NoError(t, err)

	p.mu.Lock()
	defer p.mu.Unlock()

	p.serving = &pair
	p.accepted, p.refused = 0, 0
}

func (p *etcdProxy) handle(conn net.Conn) {
	p.mu.Lock()
	p.conns[conn] = struct{}{}
	p.mu.Unlock()

	defer func() {
		p.mu.Lock()
		delete(p.conns, conn)
		p.mu.Unlock()
		conn.Close()
	}()

	server := tls.Server(conn, &tls.Config{
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			p.mu.Lock()
			defer p.mu.Unlock()

			return p.serving, nil
		},
		ClientAuth: tls.RequireAnyClientCert,
		NextProtos: []string{"h2"},
		MinVersion: tls.VersionTLS12,
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	err := server.HandshakeContext(ctx)

	cancel()

	// A client that refuses the served certificate alerts instead of finishing the handshake,
	// which the server waits for when it asks for a client certificate.
	p.mu.Lock()
	if err != nil {
		p.refused++
	} else {
		p.accepted++
		p.clients[server.ConnectionState().PeerCertificates[0].SerialNumber.String()] = true
	}
	p.mu.Unlock()

	if err != nil {
		return
	}

	backend, err := tls.Dial("tcp", p.backend, p.backendTL)
	if err != nil {
		return
	}

	defer backend.Close()

	go func() {
		_, _ = io.Copy(backend, server)
		backend.Close()
	}()

	_, _ = io.Copy(server, backend)
}

// dropAll closes every proxied connection: kube-apiserver connects again.
func (p *etcdProxy) dropAll() {
	p.mu.Lock()
	defer p.mu.Unlock()

	for conn := range p.conns {
		conn.Close()
	}
}

func (p *etcdProxy) sawClient(serial string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()

	return p.clients[serial]
}

func (p *etcdProxy) refusedSinceServing() int {
	p.mu.Lock()
	defer p.mu.Unlock()

	return p.refused
}

func (p *etcdProxy) acceptedSinceServing() int {
	p.mu.Lock()
	defer p.mu.Unlock()

	return p.accepted
}

// aggregatedAPIServer answers every request like the discovery document of test.nodepki.dev/v1
// and records the client certificate and X-Remote-User of each (kube-apiserver's own availability
// checks come as system:kube-aggregator); it closes every connection
// after one request, so that each request shows the certificate kube-apiserver holds then.
type aggregatedAPIServer struct {
	port int

	mu      sync.Mutex
	clients map[string]bool
	users   map[string]bool
}

func startAggregatedAPIServer(t *testing.T) *aggregatedAPIServer {
	t.Helper()

	crt, key, err := certs.NewRootCA(certs.RootAggregator)
	require.NoError(t, err)

	pair, err := tls.X509KeyPair(crt, key)
	require.NoError(t, err)

	a := &aggregatedAPIServer{port: 6444, clients: map[string]bool{}, users: map[string]bool{}}

	server := &http.Server{
		Addr:              net.JoinHostPort(reloadNode, fmt.Sprint(a.port)),
		ReadHeaderTimeout: 5 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			a.mu.Lock()
			if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
				a.clients[r.TLS.PeerCertificates[0].SerialNumber.String()] = true
			}

			a.users[r.Header.Get("X-Remote-User")] = true
			a.mu.Unlock()

			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"kind":"APIResourceList","apiVersion":"v1","groupVersion":"test.nodepki.dev/v1","resources":[]}`))
		}),
	}
	server.SetKeepAlivesEnabled(false)

	ln, err := tls.Listen("tcp", server.Addr, server.TLSConfig)
	require.NoError(t, err)

	go func() {
		if err := server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("aggregated API server: %v", err)
		}
	}()

	t.Cleanup(func() { server.Close() })

	return a
}

func (a *aggregatedAPIServer) sawClient(serial string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()

	return a.clients[serial]
}

func (a *aggregatedAPIServer) sawUser(user string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()

	return a.users[user]
}

// registerAPIService makes test.nodepki.dev/v1 an aggregated API served at reloadNode:port,
// through a Service of type ExternalName (kube-apiserver resolves it without kube-proxy).
func registerAPIService(t *testing.T, kubeconfigPath string, port int) {
	t.Helper()

	manifest := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: aggregated, namespace: default}
spec: {type: ExternalName, externalName: %q, ports: [{port: %d}]}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1.test.nodepki.dev}
spec:
  group: test.nodepki.dev
  version: v1
  groupPriorityMinimum: 1000
  versionPriority: 15
  insecureSkipTLSVerify: true
  service: {name: aggregated, namespace: default, port: %d}
`, reloadNode, port, port)

	cmd := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", kubeconfigPath, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)

	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
}
