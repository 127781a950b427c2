package rotate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubeclient "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/client"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/resources/kubernetes"
)

// kubeCallTimeout bounds one call to a kube-apiserver.
const kubeCallTimeout = 5 * time.Second

// Kubeconfig implements KubernetesCluster.
func (a *NodeAPI) Kubeconfig(ctx context.Context, node string, ttl time.Duration) ([]byte, error) {
	var data []byte

	err := a.do(func(c *client.Client) error {
		resp, err := c.Node().Kubeconfig(client.WithNode(ctx, node), &nodeapi.KubeconfigRequest{CrtTtlSeconds: int64(ttl / time.Second)})
		if err != nil {
			return err
		}

		data = resp.GetKubeconfig()

		return nil
	})

	return data, err
}

// KubeReady implements KubernetesCluster.
func (a *NodeAPI) KubeReady(ctx context.Context, node string, creds KubeCredentials) error {
	body, err := a.kubeGet(ctx, node, creds, "/readyz")
	if err != nil {
		return err
	}

	if strings.TrimSpace(string(body)) != "ok" {
		return fmt.Errorf("answered %q", body)
	}

	return nil
}

// KubeWhoAmI implements KubernetesCluster.
func (a *NodeAPI) KubeWhoAmI(ctx context.Context, node string, creds KubeCredentials) (string, error) {
	httpClient, err := kubeHTTPClient(creds)
	if err != nil {
		return "", err
	}

	defer httpClient.CloseIdleConnections()

	clientset, err := kubeclient.NewForConfigAndClient(&rest.Config{Host: a.kubeURL(node), Timeout: kubeCallTimeout}, httpClient)
	if err != nil {
		return "", fmt.Errorf("kube-apiserver client: %w", err)
	}

	review, err := clientset.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})

	switch {
	case apierrors.IsUnauthorized(err):
		return "", fmt.Errorf("%w: %w", ErrKubeUnauthorized, err)
	case err != nil:
		return "", err
	}

	return review.Status.UserInfo.Username, nil
}

// KubeServiceAccountKeyIDs implements KubernetesCluster.
func (a *NodeAPI) KubeServiceAccountKeyIDs(ctx context.Context, node string, creds KubeCredentials) ([]string, error) {
	body, err := a.kubeGet(ctx, node, creds, "/openid/v1/jwks")
	if err != nil {
		return nil, err
	}

	var jwks struct {
		Keys []struct {
			KeyID string `json:"kid"`
		} `json:"keys"`
	}

	if err = json.Unmarshal(body, &jwks); err != nil {
		return nil, fmt.Errorf("the key set cannot be read: %w", err)
	}

	ids := make([]string, 0, len(jwks.Keys))
	for _, k := range jwks.Keys {
		ids = append(ids, k.KeyID)
	}

	return ids, nil
}

// kubeGet makes a GET request to the node's kube-apiserver and returns the body of a 200 answer.
func (a *NodeAPI) kubeGet(ctx context.Context, node string, creds KubeCredentials, path string) ([]byte, error) {
	httpClient, err := kubeHTTPClient(creds)
	if err != nil {
		return nil, err
	}

	defer httpClient.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(ctx, kubeCallTimeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.kubeURL(node)+path, nil)
	if err != nil {
		return nil, err
	}

	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}

	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}

	switch resp.StatusCode {
	case http.StatusOK:
		return body, nil
	case http.StatusUnauthorized:
		return nil, fmt.Errorf("GET %s: %w", path, ErrKubeUnauthorized)
	default:
		return nil, fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(body)))
	}
}

// kubeURL is the node's own kube-apiserver.
func (a *NodeAPI) kubeURL(node string) string {
	if parsed, err := client.ParseEndpoint(node); err == nil {
		node = parsed.Host
	}

	port := a.opts.KubePort
	if port == 0 {
		port = kubepki.APIServerPort
	}

	return "https://" + net.JoinHostPort(node, strconv.Itoa(port))
}

// kubeHTTPClient is an HTTP client with the credentials that opens a new connection for each
// request (a kept connection would hide a change of the serving certificate), and sends
// X-Remote-User when the credentials go through the requestheader path.
func kubeHTTPClient(creds KubeCredentials) (*http.Client, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(creds.CA) {
		return nil, fmt.Errorf("the %s credentials hold no CA certificate", creds.Name)
	}

	pair, err := tls.X509KeyPair(creds.Crt, creds.Key)
	if err != nil {
		return nil, fmt.Errorf("the %s credentials' client certificate: %w", creds.Name, err)
	}

	var rt http.RoundTripper = &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
		DialContext:       (&net.Dialer{Timeout: kubeCallTimeout}).DialContext,
	}

	if creds.ProxyUser != "" {
		rt = proxyHeaders{next: rt, user: creds.ProxyUser}
	}

	return &http.Client{Transport: rt, Timeout: kubeCallTimeout}, nil
}

// proxyHeaders sets the requestheader identity of a front-proxy request.
type proxyHeaders struct {
	next http.RoundTripper
	user string
}

func (p proxyHeaders) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("X-Remote-User", p.user)

	return p.next.RoundTrip(req)
}

// KubeAPIServer implements KubernetesCluster: the node's APIServerStatus, current when the
// process was started on the startup files (APIServerFiles.StartupDigest) the node has now.
func (a *NodeAPI) KubeAPIServer(ctx context.Context, node string) (*KubeAPIServer, error) {
	var out *KubeAPIServer

	err := a.do(func(c *client.Client) error {
		callCtx := client.WithNode(ctx, node)

		st, err := safe.StateGetByID[*kubernetes.APIServerStatus](callCtx, c.COSI(), kubernetes.APIServerStatusID)
		if state.IsNotFoundError(err) || status.Code(err) == codes.PermissionDenied {
			// No kube-apiserver, or a node of a version without them.
			return nil
		}

		if err != nil {
			return err
		}

		files, err := safe.StateGetByID[*kubernetes.APIServerFiles](callCtx, c.COSI(), kubernetes.APIServerFilesID)
		if err != nil {
			return fmt.Errorf("reading the kube-apiserver files: %w", err)
		}

		spec := st.TypedSpec()

		detail := fmt.Sprintf("%s, pid %d, %d restarts", spec.State, spec.PID, spec.Restarts)
		if spec.LastError != "" {
			detail += ": " + spec.LastError
		}

		out = &KubeAPIServer{
			Running: spec.Running,
			Current: spec.Running && spec.StartupDigest == files.TypedSpec().StartupDigest,
			Detail:  detail,
		}

		return nil
	})

	return out, err
}

// NodeAPI verifies rotations through the kube-apiservers of the control planes.
var _ KubernetesCluster = (*NodeAPI)(nil)
