// Package api owns the node API that every nodepkid serves on :50000: mutual TLS whose server
// certificate and client-CA pool follow the state without a listener restart, per-call client
// authentication with roles from the certificate, routing of `node`-addressed calls to other nodes
// (control planes only, as Talos's apid does), and the services behind it: the read-only COSI State
// service, NodeService and the part of Talos's MachineService that talosctl calls, each behind a
// role check.
//
// The public gRPC server registers no service: every call goes through a transparent proxy whose
// director authenticates the caller and then picks the backend, either the internal server of this
// node (reached in-process) or the node named in the `node` metadata. A node therefore never answers
// a call addressed to another node with its own data.
package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/protobuf/server"
	"github.com/siderolabs/grpc-proxy/proxy"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/nodepki/nodepki/api/machine"
	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// DefaultPort is the node API port, on every node.
const DefaultPort = 50000

// MinTLSVersion is the oldest TLS version the node API accepts; it accepts every version from
// there to the newest crypto/tls supports.
const MinTLSVersion = tls.VersionTLS13

// TLSVersions names the TLS versions the node API accepts ("TLS 1.3"), oldest first, for the
// node's SecurityStatus.
func TLSVersions() []string {
	var out []string

	for v := uint16(MinTLSVersion); v <= tls.VersionTLS13; v++ {
		out = append(out, tls.VersionName(v))
	}

	return out
}

const (
	// shutdownGrace is how long Serve waits for calls in flight (watches never end by themselves)
	// before it cuts them.
	shutdownGrace = 5 * time.Second
	// internalBufferSize is the in-memory pipe buffer between the director and the internal server.
	internalBufferSize = 1 << 20
)

// ConfigStore reads and replaces the node's machine config; the runtime implements it.
type ConfigStore interface {
	// MachineConfig returns the current machine config document.
	MachineConfig(ctx context.Context) ([]byte, error)
	// SetMachineConfig replaces the machine config; the API calls it only with a validated config.
	SetMachineConfig(ctx context.Context, raw []byte) error
}

// Options configure a Server.
type Options struct {
	// State is the node's state: NodeCertificates api and api-client, AcceptedCAs os,
	// NodeAddresses current, RootSecrets os and the meta namespace are read from it.
	State state.State
	// Config is the machine config the node runs with.
	Config ConfigStore
	// NodeAddress is the address the node knows itself by (its --address); calls addressed to it
	// are answered locally, and Version reports it.
	NodeAddress netip.Addr
	// MachineType is the node's machine type, which cannot change while the node runs; if empty,
	// it is read from Config on each call.
	MachineType string
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
	// APIPort is the port other nodes serve the API on, for forwarded calls (default DefaultPort).
	APIPort int
	// ControlPlanes are the addresses or host names of the other control planes: forwarding
	// reaches them besides the recorded members and the control-plane endpoint host.
	ControlPlanes []string
	// StreamInterceptor, if set, wraps every call of the public server first (metrics count
	// them); UnaryInterceptor, if set, wraps the unary calls this node answers itself, after
	// authorization.
	StreamInterceptor grpc.StreamServerInterceptor
	UnaryInterceptor  grpc.UnaryServerInterceptor
	// Audit, if set, receives the node's security events (config changes, credentials issued,
	// refused calls) and serves NodeService.Audit.
	Audit *audit.Log
}

// Server is the node API server.
type Server struct {
	opts      Options
	logger    *zap.Logger
	material  *material
	guard     *guard
	forwarder *forwarder
	// peerMembers asks the other control planes about forwarding targets this node does not record.
	peerMembers *peerMembers
	node        *nodeService

	// localConn reaches the internal server; set by Serve before the public server starts.
	localConn *grpc.ClientConn
	served    atomic.Bool
}

// New checks the options and builds a server; Serve runs it.
func New(opts Options) (*Server, error) {
	if opts.State == nil {
		return nil, errors.New("api: Options.State is required")
	}

	if opts.Config == nil {
		return nil, errors.New("api: Options.Config is required")
	}

	if opts.APIPort == 0 {
		opts.APIPort = DefaultPort
	}

	if opts.APIPort < 0 || opts.APIPort > 65535 {
		return nil, fmt.Errorf("api: Options.APIPort %d is not a port number", opts.APIPort)
	}

	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}

	s := &Server{
		opts:     opts,
		logger:   opts.Logger,
		material: newMaterial(opts.Logger, opts.NodeAddress),
	}

	s.guard = newGuard(opts.Logger, s.material)
	s.forwarder = newForwarder(opts.Logger, s.material, opts.APIPort)
	s.material.onForwardingChange = s.forwarder.flush
	s.peerMembers = newPeerMembers(opts.Logger, s.forwarder.memberNamesOf, time.Now)
	s.node = &nodeService{server: s}

	return s, nil
}

// WaitReady waits until the node API certificate is loaded (Serve must be running).
func (s *Server) WaitReady(ctx context.Context) error {
	select {
	case <-s.material.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the node API certificate: %w", ctx.Err())
	}
}

// Serve follows the state, waits for the node API certificate and serves lis until ctx is done,
// then stops gracefully (calls still running after a few seconds are cut). It closes lis. A Server
// serves once.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	if !s.served.CompareAndSwap(false, true) {
		lis.Close()

		return errors.New("api: the server is already serving")
	}

	ctx, cancel := context.WithCancel(ctx)

	var watchers sync.WaitGroup

	s.material.watch(ctx, s.opts.State, &watchers)

	defer func() {
		cancel()
		watchers.Wait()
	}()

	internalLis := bufconn.Listen(internalBufferSize)
	internal := s.newInternalServer()

	go internal.Serve(internalLis) //nolint:errcheck // ends with Stop below

	defer internal.Stop()

	// The internal server is reached through an in-memory pipe rather than a unix socket: nothing
	// outside this process (and nothing in it but the director) can connect to it, which is what
	// lets it trust the role metadata, and there is no socket file to protect or clean up.
	localConn, err := grpc.NewClient("passthrough:///nodepki-internal",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return internalLis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(proxy.Codec())),
	)
	if err != nil {
		lis.Close()

		return fmt.Errorf("error connecting to the internal API server: %w", err)
	}

	s.localConn = localConn

	defer localConn.Close()
	defer s.forwarder.close()

	if err = s.WaitReady(ctx); err != nil {
		lis.Close()

		if ctx.Err() != nil {
			return nil
		}

		return err
	}

	publicOptions := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(s.tlsConfig())),
		grpc.ForceServerCodecV2(proxy.Codec()),
		grpc.UnknownServiceHandler(s.reportEnded(proxy.TransparentHandler(s.direct, proxy.WithStreamedDetector(isStreamingMachineMethod)))),
		grpc.StatsHandler(s.guard),
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.MaxHeaderListSize(maxHeaderBytes),
	}

	if s.opts.StreamInterceptor != nil {
		publicOptions = append(publicOptions, grpc.StreamInterceptor(s.opts.StreamInterceptor))
	}

	public := grpc.NewServer(publicOptions...)

	s.logger.Info("node API listening", zap.Stringer("address", lis.Addr()))

	serveErr := make(chan error, 1)

	go func() { serveErr <- public.Serve(s.guard.listener(lis)) }()

	select {
	case err = <-serveErr:
		public.Stop()

		return fmt.Errorf("node API server failed: %w", err)
	case <-ctx.Done():
	}

	stopGracefully(public)
	<-serveErr //nolint:errcheck // Serve's error after a stop only says it was stopped

	s.logger.Info("node API stopped")

	return nil
}

// tlsConfig builds the public server's TLS: 1.3 only, the current certificate on every handshake,
// a client certificate requested and verified per call (see authenticate). Session tickets are off
// so that every connection does a full handshake and sees the current certificate.
func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:             MinTLSVersion,
		ClientAuth:             tls.RequestClientCert,
		GetCertificate:         s.material.getServerCertificate,
		SessionTicketsDisabled: true,
	}
}

func (s *Server) newInternalServer() *grpc.Server {
	unary := []grpc.UnaryServerInterceptor{unaryRequestSize, s.auditUnaryRefusals, unaryAuthorizer}
	if s.opts.UnaryInterceptor != nil {
		unary = append(unary, s.opts.UnaryInterceptor)
	}

	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(s.auditStreamRefusals, streamAuthorizer),
		grpc.MaxRecvMsgSize(maxRequestBytes),
	)

	v1alpha1.RegisterStateServer(srv, server.NewState(state.Filter(s.opts.State, accessRule(s.opts.State))))
	node.RegisterNodeServiceServer(srv, s.node)
	node.RegisterEtcdServiceServer(srv, &etcdService{server: s})
	machine.RegisterMachineServiceServer(srv, newMachineService(s))

	return srv
}

func stopGracefully(srv *grpc.Server) {
	stopped := make(chan struct{})

	go func() {
		srv.GracefulStop()
		close(stopped)
	}()

	select {
	case <-stopped:
	case <-time.After(shutdownGrace):
		srv.Stop()
		<-stopped
	}
}

// currentConfig reads and parses the machine config the node runs with.
func (s *Server) currentConfig(ctx context.Context) (*machineconfig.Config, error) {
	raw, err := s.opts.Config.MachineConfig(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "error reading the machine config: %v", err)
	}

	cfg, err := machineconfig.Parse(raw)
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the current machine config cannot be parsed: %v", err)
	}

	return cfg, nil
}

func (s *Server) machineType(ctx context.Context) (string, error) {
	if s.opts.MachineType != "" {
		return s.opts.MachineType, nil
	}

	cfg, err := s.currentConfig(ctx)
	if err != nil {
		return "", err
	}

	return machineTypeOf(cfg), nil
}

func (s *Server) nodeName() string {
	if !s.opts.NodeAddress.IsValid() {
		return ""
	}

	return s.opts.NodeAddress.String()
}

func peerAddress(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}

	return ""
}
