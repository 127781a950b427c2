package api

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/siderolabs/grpc-proxy/proxy"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// direct is the proxy director of the public server: it authenticates the caller, then routes
// the call to the internal server (local) or to the node named in the metadata (forwarded).
func (s *Server) direct(ctx context.Context, fullMethod string) (proxy.Mode, []proxy.Backend, error) {
	logger := s.logger.With(zap.String("method", fullMethod), zap.String("peer", peerAddress(ctx)))

	roles, err := authenticate(ctx, s.material.clientCAs(), time.Now())
	if err != nil {
		logger.Info("call refused", zap.Error(err))

		return proxy.One2One, nil, err
	}

	md, _ := metadata.FromIncomingContext(ctx)

	if isMachineMethod(fullMethod) {
		return s.directMachine(logger, fullMethod, md, roles)
	}

	return s.directOne(logger, md, roles)
}

// directOne routes a call to the one node its metadata names.
func (s *Server) directOne(logger *zap.Logger, md metadata.MD, roles []string) (proxy.Mode, []proxy.Backend, error) {
	target, err := targetNode(md)
	if err != nil {
		return proxy.One2One, nil, err
	}

	backend, err := s.backendFor(logger, target, roles)
	if err != nil {
		return proxy.One2One, nil, err
	}

	return proxy.One2One, []proxy.Backend{backend}, nil
}

// backendFor picks the backend of a call to target (canonical, "" for this node): the internal
// server, or the target's node API through the forwarder.
func (s *Server) backendFor(logger *zap.Logger, target string, roles []string) (proxy.Backend, error) {
	if target == "" || s.material.isLocal(target) {
		return s.localBackend(roles), nil
	}

	if !s.material.canForward() {
		logger.Debug("forwarding refused: no client certificate", zap.String("node", target))

		return nil, errNoForwarding
	}

	logger.Debug("forwarding call", zap.String("node", target), zap.Strings("roles", roles))

	return s.forwarder.backend(target, roles), nil
}

// targetNode returns the canonical node a call is addressed to, or "" when it is for this node.
func targetNode(md metadata.MD) (string, error) {
	node, nodes := md.Get(NodeMetadataKey), md.Get(NodesMetadataKey)

	var value string

	switch {
	case len(node) > 0 && len(nodes) > 0:
		return "", status.Error(codes.InvalidArgument, "set either node or nodes metadata, not both")
	case len(node) > 1:
		return "", status.Error(codes.InvalidArgument, "node metadata must be single-valued")
	case len(nodes) > 1:
		return "", status.Error(codes.InvalidArgument, "one-to-many calls are not supported by this service: call each node with its own node metadata")
	case len(node) == 1:
		value = node[0]
	case len(nodes) == 1:
		value = nodes[0]
	default:
		return "", nil
	}

	return parseNodeName(value)
}

// parseNodeName checks one value of the node (or nodes) metadata and returns it canonical.
func parseNodeName(value string) (string, error) {
	value = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(value), "["), "]")
	if !validNodeName(value) {
		return "", status.Errorf(codes.InvalidArgument, "node metadata %q is not an address or a host name (give it without port)", value)
	}

	return canonicalNode(value), nil
}

func validNodeName(s string) bool {
	if _, err := netip.ParseAddr(s); err == nil {
		return true
	}

	if s == "" || len(s) > 253 {
		return false
	}

	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}

		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}

	return true
}

// localBackend reaches the internal server. The verified roles travel as metadata, which the
// internal server trusts because only this director can reach it.
func (s *Server) localBackend(roles []string) proxy.Backend {
	return &proxy.SingleBackend{
		GetConn: func(ctx context.Context) (context.Context, *grpc.ClientConn, error) {
			return outgoingContext(ctx, roles), s.localConn, nil
		},
	}
}

// outgoingContext forwards the caller's metadata without the routing keys and with the roles
// replaced by the verified ones, so a caller can never assert roles of its own.
func outgoingContext(ctx context.Context, roles []string) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()

	for _, key := range []string{NodeMetadataKey, NodesMetadataKey, ":authority"} {
		md.Delete(key)
	}

	md.Set(RoleMetadataKey, roles...)

	return metadata.NewOutgoingContext(ctx, md)
}

// forwarder keeps one client connection per target node. Connections use the client certificate
// and CA pool current when they were made; flush retires them all when either changes, closing
// each once its last call is done, so a renewal never cuts a call in flight.
type forwarder struct {
	logger   *zap.Logger
	material *material
	port     string

	mu     sync.Mutex
	conns  map[string]*remoteConn
	closed bool
}

type remoteConn struct {
	target  string
	conn    *grpc.ClientConn
	calls   int
	retired bool
}

func newForwarder(logger *zap.Logger, m *material, port int) *forwarder {
	return &forwarder{
		logger:   logger,
		material: m,
		port:     strconv.Itoa(port),
		conns:    map[string]*remoteConn{},
	}
}

func (f *forwarder) backend(target string, roles []string) proxy.Backend {
	return &proxy.SingleBackend{
		GetConn: func(ctx context.Context) (context.Context, *grpc.ClientConn, error) {
			rc, err := f.acquire(target)
			if err != nil {
				return ctx, nil, err
			}

			// ctx is canceled when the proxied call ends, which is when the connection is free.
			context.AfterFunc(ctx, func() { f.release(rc) })

			return outgoingContext(ctx, roles), rc.conn, nil
		},
	}
}

func (f *forwarder) acquire(target string) (*remoteConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()

	if f.closed {
		return nil, status.Error(codes.Unavailable, "the node API is shutting down")
	}

	if rc, ok := f.conns[target]; ok {
		rc.calls++

		return rc, nil
	}

	clientCert, pool := f.material.forwardingMaterial()
	if clientCert == nil {
		return nil, errNoForwarding
	}

	tlsConfig := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return clientCert, nil
		},
	}

	conn, err := grpc.NewClient(
		"passthrough:///"+net.JoinHostPort(target, f.port),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(proxy.Codec())),
	)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "error creating a connection to %s: %v", target, err)
	}

	rc := &remoteConn{target: target, conn: conn, calls: 1}
	f.conns[target] = rc

	return rc, nil
}

func (f *forwarder) release(rc *remoteConn) {
	f.mu.Lock()

	rc.calls--

	// A connection to a target that cannot be reached is dropped, so names of nodes that do not
	// exist do not pile up.
	if !rc.retired && rc.conn.GetState() == connectivity.TransientFailure {
		f.retireLocked(rc)
	}

	closeNow := rc.retired && rc.calls == 0

	f.mu.Unlock()

	if closeNow {
		f.closeConn(rc)
	}
}

// flush retires every cached connection: new calls get new connections.
func (f *forwarder) flush() {
	f.mu.Lock()

	var idle []*remoteConn

	for _, rc := range f.conns {
		f.retireLocked(rc)

		if rc.calls == 0 {
			idle = append(idle, rc)
		}
	}

	f.mu.Unlock()

	for _, rc := range idle {
		f.closeConn(rc)
	}
}

func (f *forwarder) close() {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()

	f.flush()
}

func (f *forwarder) retireLocked(rc *remoteConn) {
	rc.retired = true

	if f.conns[rc.target] == rc {
		delete(f.conns, rc.target)
	}
}

func (f *forwarder) closeConn(rc *remoteConn) {
	if err := rc.conn.Close(); err != nil {
		f.logger.Debug("error closing forwarding connection", zap.String("node", rc.target), zap.Error(err))
	}
}
