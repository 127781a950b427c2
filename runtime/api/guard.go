package api

import (
	"context"
	"crypto/x509"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/stats"
)

// Bounds of what callers without a valid client certificate can make the server do.
const (
	// maxRefusals is how many refused calls a connection gets before the server closes it: a
	// client with a bad certificate learns why on the first call; sending more only costs the node.
	maxRefusals = 10
	// refusalLogRate and refusalLogBurst bound the log lines of refused calls for the whole server.
	refusalLogRate  = rate.Limit(1)
	refusalLogBurst = 10
)

// guard keeps, per client connection, the verdict on its certificate chain (verified once per
// version of the accepted pool, not on every call) and the count of refused calls, and closes a
// connection that keeps sending calls that are refused. It is the server's stats handler (to tag
// each connection) and wraps its listener (to close connections).
type guard struct {
	logger   *zap.Logger
	material *material
	logLimit *rate.Limiter

	mu    sync.Mutex
	conns map[string]net.Conn // by remote address
}

func newGuard(logger *zap.Logger, m *material) *guard {
	return &guard{logger: logger, material: m, logLimit: rate.NewLimiter(refusalLogRate, refusalLogBurst), conns: map[string]net.Conn{}}
}

// connState is what the guard keeps of one connection.
type connState struct {
	remote string

	mu       sync.Mutex
	verdict  *verdict
	refusals int
}

// verdict is the outcome of verifying a connection's certificate chain against one version of the
// client trust (accepted pool and revocations).
type verdict struct {
	poolVersion uint64
	// roles and impersonator come from the leaf (see authenticate); err is the refusal.
	roles        []string
	impersonator bool
	err          error
	// chain is the verified chain and notAfter its earliest expiry: the verdict, and every call
	// authenticated by it, ends there.
	chain    []*x509.Certificate
	notAfter time.Time
}

type connStateKey struct{}

func connStateFrom(ctx context.Context) *connState {
	cs, _ := ctx.Value(connStateKey{}).(*connState)

	return cs
}

// TagConn implements stats.Handler: every call of the connection sees its connState.
func (g *guard) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	remote := ""
	if info.RemoteAddr != nil {
		remote = info.RemoteAddr.String()
	}

	return context.WithValue(ctx, connStateKey{}, &connState{remote: remote})
}

// HandleConn implements stats.Handler.
func (g *guard) HandleConn(context.Context, stats.ConnStats) {}

// TagRPC implements stats.Handler.
func (g *guard) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

// HandleRPC implements stats.Handler.
func (g *guard) HandleRPC(context.Context, stats.RPCStats) {}

// verdictFor returns the connection's verdict for the current client trust, verifying the chain
// only when the trust changed since, or the verdict's chain expired.
func (g *guard) verdictFor(ctx context.Context, now time.Time) *verdict {
	trust, version := g.material.clientTrustVersion()
	cs := connStateFrom(ctx)

	if cs != nil {
		cs.mu.Lock()
		v := cs.verdict
		cs.mu.Unlock()

		if v != nil && v.poolVersion == version && (v.err != nil || now.Before(v.notAfter)) {
			return v
		}
	}

	v := verifyPeer(ctx, trust, now)
	v.poolVersion = version

	if cs != nil {
		cs.mu.Lock()
		cs.verdict = v
		cs.mu.Unlock()
	}

	return v
}

// verifyPeer checks the peer's certificate chain (see authenticate).
func verifyPeer(ctx context.Context, trust clientTrust, now time.Time) *verdict {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return &verdict{err: errNoClientCert}
	}

	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return &verdict{err: errNoClientCert}
	}

	chain, err := verifyClientCertificate(tlsInfo.State.PeerCertificates, trust, now)
	if err != nil {
		return &verdict{err: unauthenticated(err)}
	}

	roles, impersonator := parseRoles(chain[0].Subject.Organization)

	notAfter := chain[0].NotAfter
	for _, c := range chain[1:] {
		if c.NotAfter.Before(notAfter) {
			notAfter = c.NotAfter
		}
	}

	return &verdict{roles: roles, impersonator: impersonator, chain: chain, notAfter: notAfter}
}

// refused logs a refused call within the server's log budget; a call refused for its
// certificate (unauthenticated) also counts against the connection, which is closed once it has
// been refused maxRefusals times.
func (g *guard) refused(ctx context.Context, logger *zap.Logger, err error, unauthenticated bool) {
	if g.logLimit.Allow() {
		logger.Info("call refused", zap.Error(err))
	}

	cs := connStateFrom(ctx)
	if cs == nil || !unauthenticated {
		return
	}

	cs.mu.Lock()
	cs.refusals++
	closeIt := cs.refusals == maxRefusals
	cs.mu.Unlock()

	if !closeIt {
		return
	}

	g.mu.Lock()
	conn := g.conns[cs.remote]
	g.mu.Unlock()

	if conn != nil {
		if g.logLimit.Allow() {
			logger.Warn("closing a connection after repeated refused calls", zap.Int("refused", maxRefusals))
		}

		conn.Close()
	}
}

// listener registers every accepted connection so that refused can close it.
func (g *guard) listener(lis net.Listener) net.Listener {
	return &guardListener{Listener: lis, guard: g}
}

type guardListener struct {
	net.Listener

	guard *guard
}

func (l *guardListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}

	remote := conn.RemoteAddr().String()

	l.guard.mu.Lock()
	l.guard.conns[remote] = conn
	l.guard.mu.Unlock()

	return &guardConn{Conn: conn, guard: l.guard, remote: remote}, nil
}

type guardConn struct {
	net.Conn

	guard  *guard
	remote string
	once   sync.Once
}

func (c *guardConn) Close() error {
	c.once.Do(func() {
		c.guard.mu.Lock()
		if c.guard.conns[c.remote] == c.Conn {
			delete(c.guard.conns, c.remote)
		}
		c.guard.mu.Unlock()
	})

	return c.Conn.Close()
}
