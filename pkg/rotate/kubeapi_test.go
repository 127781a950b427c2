package rotate

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodepki/nodepki/pkg/certs"
)

// testAPIServer is a TLS server that answers the calls NodeAPI makes to kube-apiserver the way
// kube-apiserver does: client certificates of clientCA authenticate as their CN, those of
// proxyCA (CN front-proxy-client) as X-Remote-User, anything else is 401.
type testAPIServer struct {
	srv                   *httptest.Server
	serverCA, clientCA    *certs.CA
	proxyCA               *certs.CA
	connections, requests atomic.Int64
	remoteUserRequests    atomic.Int64
}

func newTestCA(t *testing.T, root string) *certs.CA {
	t.Helper()

	crt, key, err := certs.NewRootCA(root)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(t, err)

	return ca
}

func startTestAPIServer(t *testing.T) *testAPIServer {
	t.Helper()

	s := &testAPIServer{serverCA: newTestCA(t, "kubernetes"), clientCA: newTestCA(t, "kubernetes"), proxyCA: newTestCA(t, "aggregator")}

	crt, key, err := s.serverCA.Issue(certs.Profile{
		CommonName: "kube-apiserver", IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, Lifetime: time.Hour,
	}, time.Now())
	require.NoError(t, err)

	pair, err := tls.X509KeyPair(crt, key)
	require.NoError(t, err)

	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	s.srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.connections.Add(1)
		}
	}
	// The refused handshakes of the tests are expected.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)

	return s
}

func (s *testAPIServer) user(r *http.Request) (string, bool) {
	if len(r.TLS.PeerCertificates) == 0 {
		return "", false
	}

	crt := r.TLS.PeerCertificates[0]
	ca, user := s.clientCA, crt.Subject.CommonName

	if remote := r.Header.Get("X-Remote-User"); remote != "" {
		s.remoteUserRequests.Add(1)

		ca, user = s.proxyCA, remote
		if crt.Subject.CommonName != frontProxyCommonName {
			return "", false
		}
	}

	pool := x509.NewCertPool()
	pool.AddCert(ca.Crt)

	_, err := crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	return user, err == nil
}

func (s *testAPIServer) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)

	user, ok := s.user(r)
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}`))

		return
	}

	switch r.URL.Path {
	case "/readyz":
		_, _ = w.Write([]byte("ok"))
	case "/openid/v1/jwks":
		_, _ = w.Write([]byte(`{"keys":[{"kid":"old-key"},{"kid":"new-key"}]}`))
	case "/apis/authentication.k8s.io/v1/selfsubjectreviews":
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(authenticationv1.SelfSubjectReview{
			TypeMeta: metav1.TypeMeta{Kind: "SelfSubjectReview", APIVersion: "authentication.k8s.io/v1"},
			Status:   authenticationv1.SelfSubjectReviewStatus{UserInfo: authenticationv1.UserInfo{Username: user}},
		}); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	default:
		http.NotFound(w, r)
	}
}

func (s *testAPIServer) api(t *testing.T) *NodeAPI {
	t.Helper()

	_, port, err := net.SplitHostPort(s.srv.Listener.Addr().String())
	require.NoError(t, err)

	p, err := strconv.Atoi(port)
	require.NoError(t, err)

	return NewNodeAPI(NodeAPIOptions{KubePort: p})
}

func (s *testAPIServer) creds(t *testing.T, ca *certs.CA, commonName string) KubeCredentials {
	t.Helper()

	c, err := issueClient(Material{Crt: ca.CrtPEM, Key: ca.KeyPEM}, commonName, nil, s.serverCA.CrtPEM, time.Now())
	require.NoError(t, err)

	return c
}

func TestNodeAPIKubeCalls(t *testing.T) {
	t.Parallel()

	s := startTestAPIServer(t)
	api := s.api(t)
	admin := s.creds(t, s.clientCA, "admin")

	require.NoError(t, api.KubeReady(t.Context(), "127.0.0.1", admin))

	user, err := api.KubeWhoAmI(t.Context(), "127.0.0.1", admin)
	require.NoError(t, err)
	assert.Equal(t, "admin", user)

	ids, err := api.KubeServiceAccountKeyIDs(t.Context(), "127.0.0.1", admin)
	require.NoError(t, err)
	assert.Equal(t, []string{"old-key", "new-key"}, ids)

	assert.Equal(t, int64(3), s.connections.Load(), "every call on a new connection")

	t.Run("a certificate of another CA is refused as unauthorized", func(t *testing.T) {
		t.Parallel()

		stranger := s.creds(t, newTestCA(t, "kubernetes"), "admin")

		_, err := api.KubeWhoAmI(t.Context(), "127.0.0.1", stranger)
		require.ErrorIs(t, err, ErrKubeUnauthorized)

		err = api.KubeReady(t.Context(), "127.0.0.1", stranger)
		require.ErrorIs(t, err, ErrKubeUnauthorized)
	})

	t.Run("the requestheader path sends X-Remote-User", func(t *testing.T) {
		t.Parallel()

		proxy := s.creds(t, s.proxyCA, frontProxyCommonName)
		proxy.ProxyUser = "alice"

		user, err := api.KubeWhoAmI(t.Context(), "127.0.0.1", proxy)
		require.NoError(t, err)
		assert.Equal(t, "alice", user)
		assert.Positive(t, s.remoteUserRequests.Load())
	})

	t.Run("a server the CA bundle does not trust is not a refusal", func(t *testing.T) {
		t.Parallel()

		untrusting := admin
		untrusting.CA = newTestCA(t, "kubernetes").CrtPEM

		_, err := api.KubeWhoAmI(t.Context(), "127.0.0.1", untrusting)
		require.Error(t, err)
		assert.NotErrorIs(t, err, ErrKubeUnauthorized)
		assert.ErrorContains(t, err, "certificate signed by unknown authority")
	})
}
