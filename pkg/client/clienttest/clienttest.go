// Package clienttest runs a node API server for client tests: the real COSI State service over
// an in-memory state with nodepki's resources registered, and a scripted NodeService, behind
// mutual TLS 1.3 on 127.0.0.1 with a throwaway CA.
package clienttest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/cosi-project/runtime/pkg/state/protobuf/server"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
	"github.com/nodepki/nodepki/resources"
)

// SelfNode is what the server calls itself in NodeService replies to calls without `node`
// metadata.
const SelfNode = "self"

// Server is a running test node API.
type Server struct {
	// Addr is the 127.0.0.1:port the server listens on.
	Addr string
	// State is the state the COSI service serves; tests create and update resources in it.
	State state.State
	// Node is the NodeService implementation.
	Node *NodeService
	// CA issued the server and client certificates.
	CA *certs.CA
	// KubernetesCA signs the kubeconfigs NodeService.Kubeconfig returns.
	KubernetesCA *certs.CA
	// ClientCrtPEM and ClientKeyPEM are an os:admin client certificate.
	ClientCrtPEM, ClientKeyPEM []byte

	mu    sync.Mutex
	nodes []string
}

// Options shape the server.
type Options struct {
	// KnownNodes are the node names the server accepts in `node` metadata (besides none); a
	// call for another node fails with Unavailable, as a control plane that cannot reach it.
	KnownNodes []string
	// ServerIPs are the IP SANs of the server certificate; default 127.0.0.1.
	ServerIPs []net.IP
}

// Start runs a server until the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()

	caCrt, caKey, err := certs.NewRootCA(certs.RootOS)
	must(t, err)

	ca, err := certs.LoadCA(caCrt, caKey)
	must(t, err)

	ips := opts.ServerIPs
	if len(ips) == 0 {
		ips = []net.IP{net.IPv4(127, 0, 0, 1)}
	}

	serverCrt, serverKey, err := ca.Issue(certs.Profile{
		IPAddresses: ips,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		Lifetime:    time.Hour,
	}, time.Now())
	must(t, err)

	clientCrt, clientKey, err := ca.Issue(certs.ClientProfile([]string{"os:admin"}, time.Hour), time.Now())
	must(t, err)

	keypair, err := tls.X509KeyPair(serverCrt, serverKey)
	must(t, err)

	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(ca.Crt)

	st := state.WrapCore(namespaced.NewState(inmem.Build))
	must(t, resources.Register(t.Context(), st))

	k8sCrt, k8sKey, err := certs.NewRootCA(certs.RootKubernetes)
	must(t, err)

	k8sCA, err := certs.LoadCA(k8sCrt, k8sKey)
	must(t, err)

	s := &Server{State: st, CA: ca, KubernetesCA: k8sCA, ClientCrtPEM: clientCrt, ClientKeyPEM: clientKey}
	s.Node = &NodeService{server: s}

	known := opts.KnownNodes

	routeNode := func(ctx context.Context) error {
		node := nodeFromContext(ctx)

		s.mu.Lock()
		s.nodes = append(s.nodes, node)
		s.mu.Unlock()

		if node != "" && !slices.Contains(known, node) {
			return status.Errorf(codes.Unavailable, "node %q is not reachable", node)
		}

		return nil
	}

	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(&tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{keypair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clientCAs,
		})),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := routeNode(ctx); err != nil {
				return nil, err
			}

			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := routeNode(ss.Context()); err != nil {
				return err
			}

			return handler(srv, ss)
		}),
	)

	v1alpha1.RegisterStateServer(srv, server.NewState(st))
	nodeapi.RegisterNodeServiceServer(srv, s.Node)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)

	s.Addr = lis.Addr().String()

	go srv.Serve(lis) //nolint:errcheck // Serve returns when the test stops the server

	t.Cleanup(srv.Stop)

	return s
}

// Config returns a talosconfig with a single context "test" pointing at the server with an
// os:admin client certificate and the given nodes.
func (s *Server) Config(nodes ...string) *clientconfig.Config {
	cfg := clientconfig.New("test", []string{s.Addr}, s.CA.CrtPEM, s.ClientCrtPEM, s.ClientKeyPEM)
	cfg.Contexts["test"].Nodes = nodes

	return cfg
}

// Nodes returns the `node` metadata of every call so far ("" for calls without one).
func (s *Server) Nodes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()

	return slices.Clone(s.nodes)
}

func nodeFromContext(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)

	if values := md.Get("node"); len(values) > 0 {
		return values[0]
	}

	return ""
}

// NodeService is a scripted NodeService: it records requests and answers with the configured
// values, naming the node the call was addressed to.
type NodeService struct {
	nodeapi.UnimplementedNodeServiceServer

	server *Server

	mu sync.Mutex
	// ServerVersion is returned by Version.
	ServerVersion string
	// Diff and Changed are returned by ApplyConfiguration.
	Diff    string
	Changed bool
	// ApplyErr, when set, fails ApplyConfiguration.
	ApplyErr error
	applied  []*nodeapi.ApplyConfigurationRequest
	// generated records the GenerateClientConfiguration requests.
	generated []*nodeapi.GenerateClientConfigurationRequest
	// kubeconfigs records the Kubeconfig requests.
	kubeconfigs []*nodeapi.KubeconfigRequest
}

// Set changes the scripted answers under the service's lock.
func (n *NodeService) Set(fn func(n *NodeService)) {
	n.mu.Lock()
	defer n.mu.Unlock()

	fn(n)
}

// Applied returns the ApplyConfiguration requests received.
func (n *NodeService) Applied() []*nodeapi.ApplyConfigurationRequest {
	n.mu.Lock()
	defer n.mu.Unlock()

	return slices.Clone(n.applied)
}

// Generated returns the GenerateClientConfiguration requests received.
func (n *NodeService) Generated() []*nodeapi.GenerateClientConfigurationRequest {
	n.mu.Lock()
	defer n.mu.Unlock()

	return slices.Clone(n.generated)
}

// Kubeconfigs returns the Kubeconfig requests received.
func (n *NodeService) Kubeconfigs() []*nodeapi.KubeconfigRequest {
	n.mu.Lock()
	defer n.mu.Unlock()

	return slices.Clone(n.kubeconfigs)
}

func answeringNode(ctx context.Context) string {
	if node := nodeFromContext(ctx); node != "" {
		return node
	}

	return SelfNode
}

// Version implements NodeService.
func (n *NodeService) Version(ctx context.Context, _ *nodeapi.VersionRequest) (*nodeapi.VersionResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()

	return &nodeapi.VersionResponse{Version: n.ServerVersion, Node: answeringNode(ctx), MachineType: "controlplane"}, nil
}

// ApplyConfiguration implements NodeService.
func (n *NodeService) ApplyConfiguration(ctx context.Context, req *nodeapi.ApplyConfigurationRequest) (*nodeapi.ApplyConfigurationResponse, error) {
	n.mu.Lock()
	defer n.mu.Unlock()

	n.applied = append(n.applied, req)

	if n.ApplyErr != nil {
		return nil, n.ApplyErr
	}

	return &nodeapi.ApplyConfigurationResponse{Diff: n.Diff, Changed: n.Changed, Node: answeringNode(ctx)}, nil
}

// GenerateClientConfiguration implements NodeService: it signs a real client certificate with
// the test CA, with the requested roles and lifetime.
func (n *NodeService) GenerateClientConfiguration(_ context.Context, req *nodeapi.GenerateClientConfigurationRequest) (*nodeapi.GenerateClientConfigurationResponse, error) {
	n.mu.Lock()
	n.generated = append(n.generated, req)
	n.mu.Unlock()

	if req.GetCrtTtlSeconds() <= 0 {
		return nil, status.Error(codes.InvalidArgument, "crt_ttl_seconds must be positive")
	}

	crt, key, err := n.server.CA.Issue(certs.ClientProfile(req.GetRoles(), time.Duration(req.GetCrtTtlSeconds())*time.Second), time.Now())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}

	cfg := clientconfig.New("admin@test", nil, n.server.CA.CrtPEM, crt, key)

	out, err := cfg.Bytes()
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}

	return &nodeapi.GenerateClientConfigurationResponse{Ca: n.server.CA.CrtPEM, Crt: crt, Key: key, Talosconfig: out}, nil
}

// KubeconfigServer is the API server URL of the kubeconfigs Kubeconfig returns.
const KubeconfigServer = "https://127.0.0.1:6443"

// KubeconfigCluster is the cluster name of the kubeconfigs Kubeconfig returns.
const KubeconfigCluster = "test"

// Kubeconfig implements NodeService: an admin kubeconfig of the test Kubernetes CA, with the
// requested lifetime or one year.
func (n *NodeService) Kubeconfig(ctx context.Context, req *nodeapi.KubeconfigRequest) (*nodeapi.KubeconfigResponse, error) {
	n.mu.Lock()
	n.kubeconfigs = append(n.kubeconfigs, req)
	n.mu.Unlock()

	ttl := kubeconfig.AdminLifetime
	if req.GetCrtTtlSeconds() > 0 {
		ttl = time.Duration(req.GetCrtTtlSeconds()) * time.Second
	}

	ca := n.server.KubernetesCA

	data, err := kubeconfig.Issue(ca, kubeconfig.Admin(KubeconfigCluster, KubeconfigServer, ca.CrtPEM, ttl), time.Now())
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}

	return &nodeapi.KubeconfigResponse{Kubeconfig: data, Node: answeringNode(ctx)}, nil
}

func must(t testing.TB, err error) {
	t.Helper()

	if err != nil {
		t.Fatal(err)
	}
}
