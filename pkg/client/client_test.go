package client_test

import (
	"encoding/base64"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/client/clienttest"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/resources"
	"github.com/nodepki/nodepki/resources/pki"
)

func TestParseEndpoint(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		in      string
		want    client.Endpoint
		wantErr string
	}{
		{in: "10.5.0.2", want: client.Endpoint{Host: "10.5.0.2", Port: 50000}},
		{in: "10.5.0.2:50001", want: client.Endpoint{Host: "10.5.0.2", Port: 50001}},
		{in: "node1.example.com", want: client.Endpoint{Host: "node1.example.com", Port: 50000}},
		{in: "node1.example.com:443", want: client.Endpoint{Host: "node1.example.com", Port: 443}},
		{in: "https://node1.example.com:8443", want: client.Endpoint{Host: "node1.example.com", Port: 8443}},
		{in: "https://node1.example.com", want: client.Endpoint{Host: "node1.example.com", Port: 50000}},
		{in: "https://[fd00::2]:50000/", want: client.Endpoint{Host: "fd00::2", Port: 50000}},
		{in: "fd00::2", want: client.Endpoint{Host: "fd00::2", Port: 50000}},
		{in: "[fd00::2]", want: client.Endpoint{Host: "fd00::2", Port: 50000}},
		{in: "[fd00::2]:1234", want: client.Endpoint{Host: "fd00::2", Port: 1234}},
		{in: " 10.5.0.2 ", want: client.Endpoint{Host: "10.5.0.2", Port: 50000}},
		{in: "", wantErr: "endpoint is empty"},
		{in: "http://10.5.0.2:50000", wantErr: `scheme "http" is not supported`},
		{in: "https://10.5.0.2:50000/api", wantErr: "a path is not allowed"},
		{in: "10.5.0.2:http", wantErr: `port "http" is not a number`},
		{in: "10.5.0.2:70000", wantErr: `port "70000" is not a number between 1 and 65535`},
		{in: ":50000", wantErr: "has no valid host"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()

			got, err := client.ParseEndpoint(tc.in)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestNewRefusesIncompleteContexts(t *testing.T) {
	t.Parallel()

	srv := clienttest.Start(t, clienttest.Options{})
	complete := srv.Config().Contexts["test"]

	otherCA, err := certs.LoadCA(mustRootCA(t))
	require.NoError(t, err)

	_, foreignKey, err := otherCA.Issue(certs.ClientProfile([]string{"os:admin"}, time.Hour), time.Now())
	require.NoError(t, err)

	for _, tc := range []struct {
		name    string
		edit    func(c *clientconfig.Context)
		opts    client.ClientOptions
		wantErr string
	}{
		{name: "no crt", edit: func(c *clientconfig.Context) { c.Crt = "" }, wantErr: "context has no crt: a client certificate is required"},
		{name: "no key", edit: func(c *clientconfig.Context) { c.Key = "" }, wantErr: "context has no key"},
		{name: "no ca", edit: func(c *clientconfig.Context) { c.CA = "" }, wantErr: "context has no ca"},
		{name: "no endpoints", edit: func(c *clientconfig.Context) { c.Endpoints = nil }, wantErr: "no endpoints"},
		{name: "bad endpoint", edit: func(c *clientconfig.Context) { c.Endpoints = []string{"http://x"} }, wantErr: `scheme "http"`},
		{name: "key of another certificate", edit: func(c *clientconfig.Context) {
			c.Key = base64.StdEncoding.EncodeToString(foreignKey)
		}, wantErr: "context key does not belong to the context crt"},
		{name: "ca not PEM", edit: func(c *clientconfig.Context) {
			c.CA = base64.StdEncoding.EncodeToString([]byte("hello"))
		}, wantErr: "context ca: not PEM"},
		// Trusting another CA is not an error until a call fails verification.
		{name: "other ca", edit: func(c *clientconfig.Context) {
			c.CA = base64.StdEncoding.EncodeToString(otherCA.CrtPEM)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cctx := *complete
			tc.edit(&cctx)

			c, err := client.New(t.Context(), client.ClientOptions{Context: &cctx})
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.Nil(t, c)

				return
			}

			require.NoError(t, err)
			require.NoError(t, c.Close())
		})
	}
}

func mustRootCA(t *testing.T) ([]byte, []byte) {
	t.Helper()

	crt, key, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	return crt, key
}

// deadEndpoint returns a 127.0.0.1 address nothing listens on.
func deadEndpoint(t *testing.T) string {
	t.Helper()

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	addr := lis.Addr().String()
	require.NoError(t, lis.Close())

	return addr
}

func TestClientCallsOverMutualTLS(t *testing.T) {
	t.Parallel()

	srv := clienttest.Start(t, clienttest.Options{KnownNodes: []string{"10.5.0.3"}})
	srv.Node.Set(func(n *clienttest.NodeService) { n.ServerVersion = "v9.9.9" })

	_, port, err := net.SplitHostPort(srv.Addr)
	require.NoError(t, err)

	for _, tc := range []struct {
		name      string
		endpoints []string
		node      string
		wantNode  string
		wantErr   string
	}{
		{name: "single endpoint", endpoints: []string{srv.Addr}, wantNode: clienttest.SelfNode},
		{name: "https URL", endpoints: []string{"https://" + srv.Addr}, wantNode: clienttest.SelfNode},
		{name: "addressed to a node", endpoints: []string{srv.Addr}, node: "10.5.0.3", wantNode: "10.5.0.3"},
		{name: "unknown node", endpoints: []string{srv.Addr}, node: "10.5.0.9", wantErr: `node "10.5.0.9" is not reachable`},
		{name: "first endpoint down", endpoints: []string{deadEndpoint(t), srv.Addr}, wantNode: clienttest.SelfNode},
		// The certificate names 127.0.0.1 only: the endpoint's host is what gets verified.
		{name: "server name is the endpoint host", endpoints: []string{"localhost:" + port}, wantErr: "wanted to match localhost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			c, err := client.New(t.Context(), client.ClientOptions{Config: srv.Config(), Endpoints: tc.endpoints})
			require.NoError(t, err)

			t.Cleanup(func() { c.Close() })

			ctx := client.WithNode(t.Context(), tc.node)

			// Several calls, so that round-robin visits every endpoint and a dead one must be skipped.
			for range 4 {
				resp, err := c.Node().Version(ctx, &nodeapi.VersionRequest{})
				if tc.wantErr != "" {
					require.ErrorContains(t, err, tc.wantErr)

					return
				}

				require.NoError(t, err)
				assert.Equal(t, "v9.9.9", resp.GetVersion())
				assert.Equal(t, tc.wantNode, resp.GetNode())
			}

			list, err := c.COSI().List(ctx, resource.NewMetadata(pki.NamespaceName, pki.CertificateStatusesType, "", resource.VersionUndefined),
				state.WithListUnmarshalOptions(state.WithSkipProtobufUnmarshal()))
			require.NoError(t, err)
			assert.Empty(t, list.Items)
		})
	}
}

func TestClientRefusedWithoutTrustedCertificate(t *testing.T) {
	t.Parallel()

	srv := clienttest.Start(t, clienttest.Options{})

	// A client certificate from a CA the server does not trust.
	otherCA, err := certs.LoadCA(mustRootCA(t))
	require.NoError(t, err)

	crt, key, err := otherCA.Issue(certs.ClientProfile([]string{"os:admin"}, time.Hour), time.Now())
	require.NoError(t, err)

	cfg := clientconfig.New("other", []string{srv.Addr}, srv.CA.CrtPEM, crt, key)

	c, err := client.New(t.Context(), client.ClientOptions{Config: cfg})
	require.NoError(t, err)

	t.Cleanup(func() { c.Close() })

	_, err = c.Node().Version(t.Context(), &nodeapi.VersionRequest{})
	// With TLS 1.3 the client may see the server's alert or just the closed connection.
	require.Error(t, err)
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.Empty(t, srv.Nodes(), "no call got past the handshake")
}

func TestWithNodeSetsMetadata(t *testing.T) {
	t.Parallel()

	srv := clienttest.Start(t, clienttest.Options{KnownNodes: []string{"a", "b"}})

	c, err := client.New(t.Context(), client.ClientOptions{Config: srv.Config()})
	require.NoError(t, err)

	t.Cleanup(func() { c.Close() })

	// Re-addressing a context replaces the node rather than adding a second value.
	ctx := c.WithNode(c.WithNode(t.Context(), "a"), "b")

	_, err = c.Node().Version(ctx, &nodeapi.VersionRequest{})
	require.NoError(t, err)

	_, err = c.Node().Version(client.WithNode(t.Context(), ""), &nodeapi.VersionRequest{})
	require.NoError(t, err)

	assert.Equal(t, []string{"b", ""}, srv.Nodes())
}

func TestResolveResourceKind(t *testing.T) {
	t.Parallel()

	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(t.Context(), st))

	// A second type that claims the alias "cs" makes that alias ambiguous.
	clash, err := meta.NewResourceDefinition(meta.ResourceDefinitionSpec{
		Type:             "ClusterSecrets.other.example.com",
		DefaultNamespace: "other",
		Aliases:          []resource.Type{"cs"},
	})
	require.NoError(t, err)
	require.NoError(t, st.Create(t.Context(), clash))

	for _, tc := range []struct {
		word, namespace string
		wantType        resource.Type
		wantNamespace   resource.Namespace
		wantErr         string
	}{
		{word: "certificatestatus", wantType: pki.CertificateStatusesType, wantNamespace: pki.NamespaceName},
		{word: "CertificateStatuses", wantType: pki.CertificateStatusesType, wantNamespace: pki.NamespaceName},
		{word: "certificatestatuses.pki.nodepki.dev", wantType: pki.CertificateStatusesType, wantNamespace: pki.NamespaceName},
		{word: "certstatus", namespace: "elsewhere", wantType: pki.CertificateStatusesType, wantNamespace: "elsewhere"},
		{word: "rd", wantType: meta.ResourceDefinitionType, wantNamespace: meta.NamespaceName},
		{word: "API-Resources", wantType: meta.ResourceDefinitionType, wantNamespace: meta.NamespaceName},
		{word: "nosuchthing", wantErr: `resource "nosuchthing" is not registered`},
		{word: "CS", wantErr: `resource type "CS" is ambiguous: [CertificateStatuses.pki.nodepki.dev, ClusterSecrets.other.example.com]`},
	} {
		t.Run(tc.word, func(t *testing.T) {
			t.Parallel()

			rd, ns, err := client.ResolveResourceKind(t.Context(), st, tc.word, tc.namespace)
			if tc.wantErr != "" {
				require.EqualError(t, err, tc.wantErr)

				var unknown *client.UnknownResourceError

				var ambiguous *client.AmbiguousResourceError

				assert.True(t, errors.As(err, &unknown) || errors.As(err, &ambiguous))

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.wantType, rd.TypedSpec().Type)
			assert.Equal(t, tc.wantNamespace, ns)
		})
	}
}

func TestEndpointAddress(t *testing.T) {
	t.Parallel()

	for _, e := range []client.Endpoint{{Host: "10.0.0.1", Port: 1}, {Host: "fd00::1", Port: 50000}, {Host: "a.example", Port: 443}} {
		host, port, err := net.SplitHostPort(e.Address())
		require.NoError(t, err)
		assert.Equal(t, e.Host, host)
		assert.Equal(t, strconv.Itoa(e.Port), port)
	}
}
