package kubernetes_test

import (
	"bufio"
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/pkg/ctxtime"
)

const (
	// callTimeout bounds one call of the load and the probes: a kube-apiserver that does not
	// answer within it counts as failed (the machine is small and shared).
	callTimeout = 5 * time.Second
	// probeInterval paces the readiness probes and the load.
	probeInterval = 100 * time.Millisecond
)

// startKubeCluster creates a local cluster whose control planes run etcd and kube-apiserver with
// pkg/cluster.Create, as `nodepkictl cluster create --kubernetes` does (it also serves benchmarks,
// unlike createKubeCluster); it is destroyed when the test ends.
func startKubeCluster(t testing.TB, first string, controlPlanes, workers int) *cluster.Cluster {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	c, err := cluster.Create(ctx, cluster.Options{
		Name:                "kuberotate",
		ControlPlanes:       controlPlanes,
		Workers:             workers,
		Dir:                 filepath.Join(t.TempDir(), "cluster"),
		Daemon:              nodepkid,
		FirstAddress:        netip.MustParseAddr(first),
		ReadyTimeout:        5 * time.Minute,
		EtcdBinary:          etcd,
		KubeAPIServerBinary: kubeAPIServer,
		Progress:            testWriter{t},
	})
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				for _, n := range c.Nodes {
					for _, log := range []string{n.Log, filepath.Join(n.StateDir, "kube-apiserver.log")} {
						if data, err := os.ReadFile(log); err == nil {
							t.Logf("tail of %s:\n%s", log, tail(data, 4000))
						}
					}
				}
			}

			if err := c.Destroy(); err != nil {
				t.Errorf("destroying the cluster: %v", err)
			}
		})
	}

	require.NoError(t, err)

	return c
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))

	return len(p), nil
}

// apiURL is a control plane's own kube-apiserver.
func apiURL(cp string) string {
	return "https://" + net.JoinHostPort(cp, "6443")
}

// creds are what a test client presents to kube-apiserver.
type creds struct {
	ca, crt, key []byte
	// token is a bearer token (a service-account token) instead of a client certificate.
	token string
	// proxyUser goes as X-Remote-User: crt is then a front-proxy client certificate.
	proxyUser string
}

// kubeconfigCreds reads the credentials of a kubeconfig's current context.
func kubeconfigCreds(path string) (creds, error) {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return creds{}, err
	}

	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		return creds{}, fmt.Errorf("%s: no complete current context", path)
	}

	user := cfg.AuthInfos[ctx.AuthInfo]

	return creds{ca: cfg.Clusters[ctx.Cluster].CertificateAuthorityData, crt: user.ClientCertificateData, key: user.ClientKeyData}, nil
}

// httpClient opens a new connection for every request, so every call is a new TLS handshake in
// both directions and sees a changed certificate at once.
func (c creds) httpClient() (*http.Client, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(c.ca) {
		return nil, errors.New("no CA certificate")
	}

	tlsConfig := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}

	if c.token == "" {
		pair, err := tls.X509KeyPair(c.crt, c.key)
		if err != nil {
			return nil, err
		}

		tlsConfig.Certificates = []tls.Certificate{pair}
	}

	transport := &http.Transport{TLSClientConfig: tlsConfig, DisableKeepAlives: true}

	rt := roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		req = req.Clone(req.Context())

		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}

		if c.proxyUser != "" {
			req.Header.Set("X-Remote-User", c.proxyUser)
		}

		return transport.RoundTrip(req)
	})

	return &http.Client{Transport: rt, Timeout: callTimeout}, nil
}

func (c creds) clientset(cp string) (*kubernetes.Clientset, error) {
	hc, err := c.httpClient()
	if err != nil {
		return nil, err
	}

	return kubernetes.NewForConfigAndClient(&rest.Config{Host: apiURL(cp), Timeout: callTimeout}, hc)
}

// readyz asks a kube-apiserver for /readyz.
func (c creds) readyz(ctx context.Context, cp string) error {
	hc, err := c.httpClient()
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, apiURL(cp)+"/readyz", nil)
	if err != nil {
		return err
	}

	resp, err := hc.Do(req)
	if err != nil {
		return err
	}

	defer resp.Body.Close()

	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s: %s", resp.Status, body)
	}

	return nil
}

// whoami is a SelfSubjectReview: the user the credentials authenticate as.
func (c creds) whoami(ctx context.Context, cp string) (string, error) {
	cs, err := c.clientset(cp)
	if err != nil {
		return "", err
	}

	review, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}

	return review.Status.UserInfo.Username, nil
}

// listNamespaces lists namespaces and checks that the system ones are there.
func (c creds) listNamespaces(ctx context.Context, cp string) error {
	cs, err := c.clientset(cp)
	if err != nil {
		return err
	}

	list, err := cs.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}

	for _, want := range []string{"default", "kube-system"} {
		if !strings.Contains(fmt.Sprint(list.Items), want) {
			return fmt.Errorf("namespace %s is missing", want)
		}
	}

	return nil
}

// apiLoad calls /readyz and lists namespaces on every kube-apiserver continuously, re-reading
// the kubeconfig before each call.
type apiLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	ok, failed []atomic.Int64
	mu         sync.Mutex
	errs       []string
	// kubeconfigs are the different kubeconfig contents the calls used.
	kubeconfigs map[string]bool
}

func startAPILoad(kubeconfig string, cps []string) *apiLoad {
	ctx, cancel := context.WithCancel(context.Background())
	l := &apiLoad{cancel: cancel, ok: make([]atomic.Int64, len(cps)), failed: make([]atomic.Int64, len(cps)), kubeconfigs: map[string]bool{}}

	for i, cp := range cps {
		l.wg.Go(func() {
			for ctx.Err() == nil {
				err := func() error {
					c, err := kubeconfigCreds(kubeconfig)
					if err != nil {
						return err
					}

					l.mu.Lock()
					l.kubeconfigs[string(c.ca)+string(c.crt)] = true
					l.mu.Unlock()

					if err = c.readyz(ctx, cp); err != nil {
						return err
					}

					return c.listNamespaces(ctx, cp)
				}()

				switch {
				case ctx.Err() != nil:
					return
				case err != nil:
					l.failed[i].Add(1)
					l.mu.Lock()
					l.errs = append(l.errs, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), cp, err))
					l.mu.Unlock()
				default:
					l.ok[i].Add(1)
				}

				_ = ctxtime.Sleep(ctx, probeInterval)
			}
		})
	}

	return l
}

// waitCalls waits until the load made n more calls on every apiserver, passed or failed.
func (l *apiLoad) waitCalls(t testing.TB, n int64) {
	t.Helper()

	base := make([]int64, len(l.ok))
	for i := range l.ok {
		base[i] = l.ok[i].Load() + l.failed[i].Load()
	}

	require.Eventually(t, func() bool {
		for i := range l.ok {
			if l.ok[i].Load()+l.failed[i].Load() < base[i]+n {
				return false
			}
		}

		return true
	}, time.Minute, 50*time.Millisecond)
}

func (l *apiLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// readyProber probes every kube-apiserver's /readyz together every probeInterval, each on a new
// connection, and records the most found not ready in one round and the longest time each was
// not ready.
type readyProber struct {
	cancel context.CancelFunc
	done   chan struct{}
	cps    []string

	mu        sync.Mutex
	rounds    int
	maxDown   int
	worst     []string
	downs     map[string]int
	downSince map[string]time.Time
	maxOutage time.Duration
}

func startReadyProber(kubeconfig string, cps []string) *readyProber {
	ctx, cancel := context.WithCancel(context.Background())
	p := &readyProber{cancel: cancel, done: make(chan struct{}), cps: cps, downs: map[string]int{}, downSince: map[string]time.Time{}}

	go func() {
		defer close(p.done)

		for ctx.Err() == nil {
			sent := time.Now()
			results := make([]error, len(cps))

			c, err := kubeconfigCreds(kubeconfig)

			var wg sync.WaitGroup

			for i, cp := range cps {
				wg.Go(func() {
					if err != nil {
						results[i] = err

						return
					}

					results[i] = c.readyz(ctx, cp)
				})
			}

			wg.Wait()

			if ctx.Err() != nil {
				return
			}

			p.record(results, sent)
			_ = ctxtime.Sleep(ctx, probeInterval-time.Since(sent))
		}
	}()

	return p
}

func (p *readyProber) record(results []error, sent time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()

	p.rounds++

	var down []string

	for i, err := range results {
		cp := p.cps[i]

		if err == nil {
			if since, ok := p.downSince[cp]; ok {
				p.maxOutage = max(p.maxOutage, sent.Sub(since))
				delete(p.downSince, cp)
			}

			continue
		}

		if _, ok := p.downSince[cp]; !ok {
			p.downSince[cp] = sent
		}

		p.downs[cp]++
		down = append(down, fmt.Sprintf("%s: %v", cp, err))
	}

	if len(down) > p.maxDown {
		p.maxDown, p.worst = len(down), down
	}
}

func (p *readyProber) stop() {
	p.cancel()
	<-p.done

	p.mu.Lock()
	defer p.mu.Unlock()

	// An outage still open at the end counts up to now.
	for _, since := range p.downSince {
		p.maxOutage = max(p.maxOutage, time.Since(since))
	}
}

// timedLine is a line of a command's output and when it was read.
type timedLine struct {
	at   time.Time
	line string
}

// runTimed runs nodepkictl with the cluster's talosconfig, recording when each output line came.
func runTimed(t testing.TB, c *cluster.Cluster, args ...string) ([]timedLine, string, error) {
	t.Helper()

	cmd := exec.Command(nodepkictl, append([]string{"--talosconfig", c.Talosconfig}, args...)...)

	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw

	var (
		lines []timedLine
		all   strings.Builder
		read  = make(chan struct{})
	)

	go func() {
		defer close(read)

		scanner := bufio.NewScanner(pr)
		for scanner.Scan() {
			lines = append(lines, timedLine{at: time.Now(), line: scanner.Text()})
			all.WriteString(scanner.Text() + "\n")
		}
	}()

	err := cmd.Run()
	pw.Close()
	<-read

	return lines, all.String(), err
}

// lineTime is when the first line starting with prefix came; zero when none did.
func lineTime(lines []timedLine, prefix string) time.Time {
	for _, l := range lines {
		if strings.HasPrefix(l.line, prefix) {
			return l.at
		}
	}

	return time.Time{}
}

// runCLI runs nodepkictl with the cluster's talosconfig.
func runCLI(t testing.TB, c *cluster.Cluster, args ...string) (string, error) {
	t.Helper()

	out, err := exec.Command(nodepkictl, append([]string{"--talosconfig", c.Talosconfig}, args...)...).CombinedOutput()

	return string(out), err
}

// isUnauthorized reports whether a kube-apiserver refused the credentials (401).
func isUnauthorized(err error) bool {
	return apierrors.IsUnauthorized(err)
}

// tokenKeyID is the key ID in a JWT's header.
func tokenKeyID(token string) (string, error) {
	header, _, ok := strings.Cut(token, ".")
	if !ok {
		return "", errors.New("not a JWT")
	}

	data, err := base64.RawURLEncoding.DecodeString(header)
	if err != nil {
		return "", err
	}

	var h struct {
		KeyID string `json:"kid"`
	}

	if err = json.Unmarshal(data, &h); err != nil {
		return "", err
	}

	return h.KeyID, nil
}
