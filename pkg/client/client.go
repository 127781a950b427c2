// Package client owns the Go client of the node API: it dials a context's endpoints with mutual
// TLS 1.3, balances calls across them, addresses calls to a node with `node` metadata, and exposes
// the COSI State service as a state.State and nodepki's NodeService.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/state"
	stateclient "github.com/cosi-project/runtime/pkg/state/protobuf/client"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
)

// DefaultPort is the node API port, used for endpoints written without one.
const DefaultPort = 50000

// NodeMetadataKey is the gRPC metadata key that names the node a call is addressed to; a
// control-plane node forwards such calls to the named node.
const NodeMetadataKey = "node"

// ClientOptions selects what New connects to.
type ClientOptions struct {
	// Config is a whole talosconfig; its current context is used unless Context is set.
	Config *clientconfig.Config
	// Context is the context to use; it takes precedence over Config.
	Context *clientconfig.Context
	// Endpoints, when not empty, replaces the context's endpoints.
	Endpoints []string
	// Logger receives the COSI watch retry warnings; nil discards them.
	Logger *zap.Logger
}

// Client is a connection to the node API through one or more endpoints.
type Client struct {
	conn      *grpc.ClientConn
	endpoints []Endpoint
	cosi      state.State
	node      nodeapi.NodeServiceClient
}

// Endpoint is a parsed node API endpoint.
type Endpoint struct {
	// Host is the host name or IP address; it is also the TLS server name.
	Host string
	Port int
}

// Address returns host:port, with brackets around IPv6 addresses.
func (e Endpoint) Address() string {
	return net.JoinHostPort(e.Host, strconv.Itoa(e.Port))
}

// ParseEndpoint accepts an endpoint the way talosconfig files write them: "host", "host:port",
// "[v6]:port", a bare IPv6 address or "https://host:port". A missing port means DefaultPort.
func ParseEndpoint(s string) (Endpoint, error) {
	return ParseEndpointWithPort(s, DefaultPort)
}

// ParseEndpointWithPort is ParseEndpoint with another default port (trustd's, say).
func ParseEndpointWithPort(s string, defaultPort int) (Endpoint, error) {
	raw := strings.TrimSpace(s)
	if raw == "" {
		return Endpoint{}, errors.New("endpoint is empty: want host, host:port or https://host:port")
	}

	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return Endpoint{}, fmt.Errorf("endpoint %q is not a valid URL: %w", s, err)
		}

		if u.Scheme != "https" {
			return Endpoint{}, fmt.Errorf("endpoint %q: scheme %q is not supported: the node API is https (or write host:port)", s, u.Scheme)
		}

		if u.Path != "" && u.Path != "/" {
			return Endpoint{}, fmt.Errorf("endpoint %q: a path is not allowed: write https://host:port", s)
		}

		raw = u.Host
	}

	if ip := net.ParseIP(raw); ip != nil {
		return Endpoint{Host: raw, Port: defaultPort}, nil
	}

	host, portText, err := net.SplitHostPort(raw)
	if err != nil {
		// No port: SplitHostPort refuses "host" and "[v6]" alike.
		host, portText = strings.TrimSuffix(strings.TrimPrefix(raw, "["), "]"), ""
	}

	if host == "" || strings.ContainsAny(host, "/ ") || strings.Contains(host, ":") && net.ParseIP(host) == nil {
		return Endpoint{}, fmt.Errorf("endpoint %q has no valid host: want host, host:port or https://host:port", s)
	}

	port := defaultPort

	if portText != "" {
		port, err = strconv.Atoi(portText)
		if err != nil || port < 1 || port > 65535 {
			return Endpoint{}, fmt.Errorf("endpoint %q: port %q is not a number between 1 and 65535", s, portText)
		}
	}

	return Endpoint{Host: host, Port: port}, nil
}

// schemeCounter gives each Client its own resolver scheme, so that clients never share
// resolver state through grpc's global registry.
var schemeCounter atomic.Uint64

// New connects to the endpoints of the chosen context. The connection is lazy: an unreachable
// endpoint shows up as an error on the first call, and calls go to the endpoints that answer.
func New(ctx context.Context, opts ClientOptions) (*Client, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	cctx, err := chooseContext(opts)
	if err != nil {
		return nil, err
	}

	rawEndpoints := cctx.Endpoints
	if len(opts.Endpoints) > 0 {
		rawEndpoints = opts.Endpoints
	}

	if len(rawEndpoints) == 0 {
		return nil, errors.New("no endpoints: set them with --endpoints or `nodepkictl config endpoint HOST...`")
	}

	endpoints := make([]Endpoint, 0, len(rawEndpoints))

	for _, raw := range rawEndpoints {
		endpoint, err := ParseEndpoint(raw)
		if err != nil {
			return nil, err
		}

		endpoints = append(endpoints, endpoint)
	}

	tlsConfig, err := clientTLS(cctx)
	if err != nil {
		return nil, err
	}

	// Each address carries its own ServerName so that a certificate is checked against the
	// endpoint it came from, whichever endpoint the balancer picks.
	addresses := make([]resolver.Address, 0, len(endpoints))
	for _, e := range endpoints {
		addresses = append(addresses, resolver.Address{Addr: e.Address(), ServerName: e.Host})
	}

	scheme := "nodepki-" + strconv.FormatUint(schemeCounter.Add(1), 10)
	builder := manual.NewBuilderWithScheme(scheme)
	builder.InitialState(resolver.State{Addresses: addresses})

	conn, err := grpc.NewClient(scheme+":///node-api",
		grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"round_robin":{}}]}`),
	)
	if err != nil {
		return nil, fmt.Errorf("creating the node API client: %w", err)
	}

	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}

	// Watches are not retried inside the adapter: it would retry a watch the node ended for a
	// revoked or expired credential for minutes, unseen; callers re-subscribe themselves and
	// see why a watch ended.
	return &Client{
		conn:      conn,
		endpoints: endpoints,
		cosi: state.WrapCore(stateclient.NewAdapter(v1alpha1.NewStateClient(conn),
			stateclient.WithRetryLogger(logger), stateclient.WithDisableWatchRetry())),
		node: nodeapi.NewNodeServiceClient(conn),
	}, nil
}

func chooseContext(opts ClientOptions) (*clientconfig.Context, error) {
	if opts.Context != nil {
		return opts.Context, nil
	}

	if opts.Config == nil {
		return nil, errors.New("no client configuration: pass a talosconfig or a context")
	}

	return opts.Config.Current()
}

// clientTLS builds the TLS 1.3 client configuration from the context's CA and client
// certificate. It leaves ServerName empty: gRPC fills it per address.
func clientTLS(cctx *clientconfig.Context) (*tls.Config, error) {
	caPEM, err := cctx.CAPEM()
	if err != nil {
		return nil, fmt.Errorf("%w: the CA to trust is required to verify the nodes", err)
	}

	cas, err := certs.ParseCertificates(caPEM)
	if err != nil {
		return nil, fmt.Errorf("context ca: %w", err)
	}

	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}

	crtPEM, err := cctx.CrtPEM()
	if err != nil {
		return nil, fmt.Errorf("%w: a client certificate is required by the node API (generate one with `nodepkictl config new` or `nodepkictl gen config`)", err)
	}

	keyPEM, err := cctx.KeyPEM()
	if err != nil {
		return nil, fmt.Errorf("%w: the client certificate's private key is required by the node API", err)
	}

	keypair, err := clientKeypair(crtPEM, keyPEM)
	if err != nil {
		return nil, err
	}

	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		Certificates: []tls.Certificate{keypair},
	}, nil
}

func clientKeypair(crtPEM, keyPEM []byte) (tls.Certificate, error) {
	chain, err := certs.ParseCertificates(crtPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("context crt: %w", err)
	}

	key, err := certs.ParsePrivateKey(keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("context key: %w", err)
	}

	if !certs.KeyMatchesCertificate(chain[0], key) {
		return tls.Certificate{}, errors.New("context key does not belong to the context crt: the two come from different client configs")
	}

	keypair := tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, crt := range chain {
		keypair.Certificate = append(keypair.Certificate, crt.Raw)
	}

	return keypair, nil
}

// COSI returns the COSI State service of the node API as a state.State. Read resources without
// compile-time types with state.WithSkipProtobufUnmarshal.
func (c *Client) COSI() state.State {
	return c.cosi
}

// Node returns nodepki's NodeService client.
func (c *Client) Node() nodeapi.NodeServiceClient {
	return c.node
}

// Etcd returns nodepki's EtcdService client (control planes running etcd).
func (c *Client) Etcd() nodeapi.EtcdServiceClient {
	return nodeapi.NewEtcdServiceClient(c.conn)
}

// Endpoints returns the endpoints the client balances across.
func (c *Client) Endpoints() []Endpoint {
	return slices.Clone(c.endpoints)
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

// WithNode returns a context whose calls are addressed to node. An empty node leaves the
// context unchanged, so the endpoint answers for itself.
func WithNode(ctx context.Context, node string) context.Context {
	if node == "" {
		return ctx
	}

	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(NodeMetadataKey, node)

	return metadata.NewOutgoingContext(ctx, md)
}

// WithNode is WithNode as a method, for callers that hold a Client.
func (c *Client) WithNode(ctx context.Context, node string) context.Context {
	return WithNode(ctx, node)
}
