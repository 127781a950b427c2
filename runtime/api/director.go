package api

import (
	"container/list"
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

	v := s.guard.verdictFor(ctx, time.Now())

	roles, err := authenticate(ctx, v)
	if err != nil {
		s.guard.refused(ctx, logger, err, v.err != nil)
		s.auditRefused(peerAddress(ctx), fullMethod, err)

		return proxy.One2One, nil, err
	}

	md, _ := metadata.FromIncomingContext(ctx)
	c := &caller{ctx: ctx, logger: logger, roles: roles, verdict: v}

	if isMachineMethod(fullMethod) {
		return s.directMachine(c, fullMethod, md)
	}

	return s.directOne(c, md)
}

// caller is an authenticated call being routed.
type caller struct {
	ctx     context.Context //nolint:containedctx // the call's context, for the routing decision only
	logger  *zap.Logger
	roles   []string
	verdict *verdict
}

// directOne routes a call to the one node its metadata names.
func (s *Server) directOne(c *caller, md metadata.MD) (proxy.Mode, []proxy.Backend, error) {
	target, err := targetNode(md)
	if err != nil {
		return proxy.One2One, nil, err
	}

	backend, err := s.backendFor(c, target)
	if err != nil {
		return proxy.One2One, nil, err
	}

	return proxy.One2One, []proxy.Backend{backend}, nil
}

// backendFor picks the backend of a call to target (canonical, "" for this node): the internal
// server, or the target's node API through the forwarder. Either way the call ends with the
// caller's credential (boundToCredential).
func (s *Server) backendFor(c *caller, target string) (proxy.Backend, error) {
	if target == "" || s.material.isLocal(target) {
		return s.localBackend(c.roles, c.verdict), nil
	}

	if c.verdict.impersonator {
		// A call forwarded by another node carries no node metadata (outgoingContext drops it);
		// one that does is not forwarded again, so no chain of hops can be built.
		return nil, errSecondHop
	}

	if !s.material.canForward() {
		c.logger.Debug("forwarding refused: no client certificate", zap.String("node", target))

		return nil, errNoForwarding
	}

	if err := s.forwardingTarget(c.ctx, target); err != nil {
		c.logger.Info("forwarding refused", zap.String("node", target), zap.Error(err))

		return nil, err
	}

	c.logger.Debug("forwarding call", zap.String("node", target), zap.Strings("roles", c.roles))

	return s.forwarder.backend(target, c.roles, c.verdict, func(ctx context.Context) context.Context { return s.boundToCredential(ctx, c.verdict) }), nil
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
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' {
				return false
			}
		}
	}

	return true
}

// localBackend reaches the internal server. The verified roles travel as metadata, which the
// internal server trusts because only this director can reach it.
func (s *Server) localBackend(roles []string, v *verdict) proxy.Backend {
	return &proxy.SingleBackend{
		GetConn: func(ctx context.Context) (context.Context, *grpc.ClientConn, error) {
			return outgoingContext(s.boundToCredential(ctx, v), roles, v), s.localConn, nil
		},
	}
}

// outgoingContext forwards the caller's metadata without the routing keys and with the roles
// (and the caller, see setCallerMetadata) replaced by the verified ones, so a caller can never
// assert roles of its own.
func outgoingContext(ctx context.Context, roles []string, v *verdict) context.Context {
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()

	for _, key := range []string{NodeMetadataKey, NodesMetadataKey, ":authority"} {
		md.Delete(key)
	}

	md.Set(RoleMetadataKey, roles...)
	setCallerMetadata(ctx, md, v)

	return metadata.NewOutgoingContext(ctx, md)
}

// maxForwardConns bounds the forwarding connections kept: past it, the least recently used is
// retired. It is the fan-out bound, so that one call to many nodes never evicts its own
// connections; names of nodes that do not answer do not pile up.
const maxForwardConns = maxFanOut

// forwarder keeps one client connection per target node, at most maxForwardConns, least recently
// used first out. Connections use the client certificate and CA pool current when they were made;
// flush retires them all when either changes, closing each once its last call is done, so a
// renewal never cuts a call in flight. A connection that fails to connect is retired at once.
type forwarder struct {
	logger   *zap.Logger
	material *material
	port     string

	mu     sync.Mutex
	conns  map[string]*remoteConn
	lru    *list.List // of *remoteConn, most recently used first
	closed bool
}

type remoteConn struct {
	target  string
	conn    *grpc.ClientConn
	calls   int
	retired bool
	elem    *list.Element
}

func newForwarder(logger *zap.Logger, m *material, port int) *forwarder {
	return &forwarder{
		logger:   logger,
		material: m,
		port:     strconv.Itoa(port),
		conns:    map[string]*remoteConn{},
		lru:      list.New(),
	}
}

func (f *forwarder) backend(target string, roles []string, v *verdict, bound func(context.Context) context.Context) proxy.Backend {
	return &proxy.SingleBackend{
		GetConn: func(ctx context.Context) (context.Context, *grpc.ClientConn, error) {
			rc, err := f.acquire(target)
			if err != nil {
				return ctx, nil, err
			}

			// ctx is canceled when the proxied call ends, which is when the connection is free.
			context.AfterFunc(ctx, func() { f.release(rc) })

			return outgoingContext(bound(ctx), roles, v), rc.conn, nil
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
		f.lru.MoveToFront(rc.elem)

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

	rc := &remoteConn{target: target, calls: 1}

	conn, err := grpc.NewClient(
		"passthrough:///"+net.JoinHostPort(target, f.port),
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(proxy.Codec())),
		grpc.WithChainStreamInterceptor(f.genericErrors(rc)),
	)
	if err != nil {
		f.logger.Warn("error creating a forwarding connection", zap.String("node", target), zap.Error(err))

		return nil, status.Errorf(codes.Internal, "node %s cannot be reached", target)
	}

	rc.conn = conn

	for len(f.conns) >= maxForwardConns {
		victim := f.lru.Back().Value.(*remoteConn) //nolint:forcetypeassert // the list holds *remoteConn only
		f.retireLocked(victim)

		if victim.calls == 0 {
			go f.closeConn(victim)
		}
	}

	rc.elem = f.lru.PushFront(rc)
	f.conns[target] = rc

	return rc, nil
}

// genericErrors replaces the errors of reaching the target (dial and TLS errors, which name
// addresses and certificates of the network behind this node) with a generic one, logs the
// detail, and retires the connection. Errors the target node answers pass unchanged.
func (f *forwarder) genericErrors(rc *remoteConn) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		stream, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, f.generic(rc, err)
		}

		return &genericErrorStream{ClientStream: stream, forwarder: f, rc: rc}, nil
	}
}

func (f *forwarder) generic(rc *remoteConn, err error) error {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unavailable || !strings.HasPrefix(st.Message(), "connection error") {
		return err
	}

	f.logger.Info("forwarding target unreachable", zap.String("node", rc.target), zap.Error(err))

	f.mu.Lock()
	f.retireLocked(rc)
	f.mu.Unlock()

	return status.Errorf(codes.Unavailable, "node %s cannot be reached", rc.target)
}

type genericErrorStream struct {
	grpc.ClientStream

	forwarder *forwarder
	rc        *remoteConn
}

func (s *genericErrorStream) RecvMsg(m any) error {
	if err := s.ClientStream.RecvMsg(m); err != nil {
		return s.forwarder.generic(s.rc, err)
	}

	return nil
}

func (s *genericErrorStream) SendMsg(m any) error {
	if err := s.ClientStream.SendMsg(m); err != nil {
		return s.forwarder.generic(s.rc, err)
	}

	return nil
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

// retireLocked takes rc out of the cache; the caller closes it if it has no call, else release
// closes it after its last call.
func (f *forwarder) retireLocked(rc *remoteConn) {
	rc.retired = true

	if f.conns[rc.target] == rc {
		delete(f.conns, rc.target)
		f.lru.Remove(rc.elem)
	}
}

func (f *forwarder) closeConn(rc *remoteConn) {
	if err := rc.conn.Close(); err != nil {
		f.logger.Debug("error closing forwarding connection", zap.String("node", rc.target), zap.Error(err))
	}
}
