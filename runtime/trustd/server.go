package trustd

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	trustdapi "github.com/nodepki/nodepki/api/trustd"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// Server limits.
const (
	maxRequestBytes   = 64 << 10 // a CSR is well under 4 KiB
	handshakeTimeout  = 10 * time.Second
	gracefulStopLimit = 10 * time.Second
)

// Options configure a Server.
type Options struct {
	// State holds the pki resources the server reads: RootSecrets/os (CA and tokens),
	// AcceptedCAs/os (the bundle returned to workers) and NodeCertificates/trustd (its TLS
	// certificate); the server records each worker it signs for there as a cluster.Member.
	State  state.State
	Logger *zap.Logger

	// RateLimit and RateBurst bound requests per peer IP; zero means DefaultRateLimit / DefaultRateBurst.
	RateLimit rate.Limit
	RateBurst int
	// Lifetime fixes the lifetime of the signed certificates (at most CertificateLifetime); zero
	// follows the control plane's own api lifetime (its CertificateRequest "api", from
	// machine.certificateLifetimes.api), or CertificateLifetime without one.
	Lifetime time.Duration
	// MaxMembers bounds the workers recorded as members; zero means DefaultMaxMembers.
	MaxMembers int
	// MemberRetention is how long a worker that no longer renews stays a member; zero means
	// DefaultMemberRetention.
	MemberRetention time.Duration
	// Clock overrides time.Now for the members' lastSeen and their garbage collection.
	Clock func() time.Time
	// ControlPlanes are the addresses and host names of the other control planes, which no
	// worker may hold (besides those the members and the state tell).
	ControlPlanes []string
	// Interceptor, if set, wraps every request first, before rate limiting (metrics count them).
	Interceptor grpc.UnaryServerInterceptor
	// Audit, if set, receives each certificate signed and each request refused.
	Audit *audit.Log
}

// Server is the trustd gRPC server. Create it with New and run it with Serve.
type Server struct {
	state       state.State
	logger      *zap.Logger
	certificate *certificateSource
	limiter     *peerLimiter
	lifetime    time.Duration
	// fromConfig is set when Options.Lifetime was zero: lifetime is then only the fallback.
	fromConfig bool

	// issuingCA is the OS CA loaded from the root secret's PEM: parsing the key on every request
	// would cost as much as a signature.
	issuingCA lastDerived[caPEM, *certs.CA]
	// caBundle is the PEM bundle of AcceptedCAs/os, built again only when its certificates change.
	caBundle lastDerived[[]string, []byte]
	// endpointHost is the control-plane endpoint host of the machine config, parsed again only
	// when the config changes.
	endpointHost lastDerived[string, string]

	members       memberOptions
	controlPlanes []string
	interceptor   grpc.UnaryServerInterceptor
	audit         *audit.Log
}

type caPEM struct{ crt, key string }

func loadCA(pem caPEM) (*certs.CA, error) {
	return certs.LoadCA([]byte(pem.crt), []byte(pem.key))
}

func buildCABundle(certificates []string) ([]byte, error) {
	if len(certificates) == 0 {
		return nil, errors.New("no accepted OS CA")
	}

	var bundle strings.Builder

	for _, crt := range certificates {
		bundle.WriteString(strings.TrimSpace(crt))
		bundle.WriteByte('\n')
	}

	return []byte(bundle.String()), nil
}

// lastDerived keeps the value derived from the last input, so that requests carrying the same
// input (read from state each time) do not derive it again. A failed derivation is not kept.
type lastDerived[In, Out any] struct {
	equal  func(a, b In) bool
	derive func(In) (Out, error)

	mu    sync.Mutex
	valid bool
	in    In
	out   Out
}

func (d *lastDerived[In, Out]) get(in In) (Out, error) {
	d.mu.Lock()
	defer d.mu.Unlock()

	if d.valid && d.equal(d.in, in) {
		return d.out, nil
	}

	out, err := d.derive(in)
	if err != nil {
		return out, err
	}

	d.valid, d.in, d.out = true, in, out

	return out, nil
}

// New checks the options and builds a Server; nothing runs until Serve.
func New(opts Options) (*Server, error) {
	if opts.State == nil {
		return nil, errors.New("trustd: Options.State is required")
	}

	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}

	limit, burst := opts.RateLimit, opts.RateBurst
	if limit == 0 {
		limit = DefaultRateLimit
	}

	if burst == 0 {
		burst = DefaultRateBurst
	}

	if limit < 0 || burst < 0 {
		return nil, fmt.Errorf("trustd: rate limit %v and burst %d must not be negative", limit, burst)
	}

	lifetime := opts.Lifetime
	if lifetime == 0 {
		lifetime = CertificateLifetime
	}

	if lifetime < 0 || lifetime > CertificateLifetime {
		return nil, fmt.Errorf("trustd: certificate lifetime %s must be positive and at most %s", lifetime, CertificateLifetime)
	}

	members, err := newMemberOptions(opts)
	if err != nil {
		return nil, err
	}

	return &Server{
		controlPlanes: slices.Clone(opts.ControlPlanes),
		interceptor:   opts.Interceptor,
		audit:         opts.Audit,
		members:       members,
		state:         opts.State,
		logger:        logger,
		certificate:   newCertificateSource(),
		limiter:       newPeerLimiter(limit, burst, maxTrackedPeers),
		lifetime:      lifetime,
		fromConfig:    opts.Lifetime == 0,
		issuingCA:     lastDerived[caPEM, *certs.CA]{equal: func(a, b caPEM) bool { return a == b }, derive: loadCA},
		caBundle:      lastDerived[[]string, []byte]{equal: slices.Equal[[]string], derive: buildCABundle},
		endpointHost: lastDerived[string, string]{
			equal:  func(a, b string) bool { return a == b },
			derive: endpointHostOf,
		},
	}, nil
}

// Serve serves trustd on lis until ctx is cancelled, then stops gracefully (in-flight requests
// finish, bounded by a grace period) and returns nil. It returns an error if serving fails.
// Handshakes fail until the NodeCertificate "trustd" exists; see WaitReady.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	tlsConfig := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.NoClientCert,
		GetCertificate: s.certificate.GetCertificate,
	}

	interceptors := []grpc.UnaryServerInterceptor{s.rateLimit}
	if s.interceptor != nil {
		interceptors = append([]grpc.UnaryServerInterceptor{s.interceptor}, interceptors...)
	}

	server := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConfig)),
		grpc.ChainUnaryInterceptor(interceptors...),
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.ConnectionTimeout(handshakeTimeout),
	)
	trustdapi.RegisterTrustdServiceServer(server, &service{server: s})

	watchErr := make(chan error, 1)

	go func() { watchErr <- s.certificate.watch(ctx, s.state, s.logger) }()

	collected := make(chan struct{})

	go func() {
		defer close(collected)

		s.collectMembers(ctx)
	}()

	defer func() {
		cancel()
		<-collected
	}()

	serveErr := make(chan error, 1)

	go func() { serveErr <- server.Serve(lis) }()

	s.logger.Info("trustd serving", zap.Stringer("address", lis.Addr()))

	select {
	case <-ctx.Done():
		stopGracefully(server)
		<-serveErr //nolint:errcheck // Serve's error after a stop only says it was stopped

		return nil
	case err := <-serveErr:
		cancel()

		return fmt.Errorf("trustd: error serving on %s: %w", lis.Addr(), err)
	case err := <-watchErr:
		server.Stop()
		<-serveErr //nolint:errcheck // Serve's error after a stop only says it was stopped

		return fmt.Errorf("trustd: %w", err)
	}
}

// WaitReady blocks until the server has a TLS certificate to serve (Serve must be running), or ctx is done.
func (s *Server) WaitReady(ctx context.Context) error {
	select {
	case <-s.certificate.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("trustd: waiting for the server certificate: %w", context.Cause(ctx))
	}
}

func stopGracefully(server *grpc.Server) {
	stopped := make(chan struct{})

	go func() {
		server.GracefulStop()
		close(stopped)
	}()

	select {
	case <-stopped:
	case <-time.After(gracefulStopLimit):
		server.Stop()
		<-stopped
	}
}

// rateLimit runs before authentication so that token guessing is limited too.
func (s *Server) rateLimit(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !s.limiter.allow(peerHost(ctx), time.Now()) {
		s.auditRefused(ctx, "rate limited")

		return nil, status.Error(codes.ResourceExhausted, "too many requests from this address: retry later")
	}

	return handler(ctx, req)
}

// authenticate accepts a request whose "token" metadata is one of the os root's tokens; the root
// is read per request, so a token change applies at once.
func (s *Server) authenticate(ctx context.Context, root *pki.RootSecretSpec) error {
	var presented string

	if values := metadata.ValueFromIncomingContext(ctx, TokenMetadataKey); len(values) > 0 {
		presented = values[0]
	}

	if !tokenAccepted(presented, root.Tokens) {
		s.logger.Warn("trustd request refused: invalid join token", zap.String("peer", peerHost(ctx)))
		s.auditRefused(ctx, "invalid join token")

		return status.Error(codes.Unauthenticated, "invalid join token")
	}

	return nil
}

// tokenAccepted compares digests in constant time, so neither the content nor the length of a
// configured token leaks through timing. Empty tokens never match.
func tokenAccepted(presented string, tokens []string) bool {
	if presented == "" {
		return false
	}

	presentedSum := sha256.Sum256([]byte(presented))
	accepted := 0

	for _, token := range tokens {
		if token == "" {
			continue
		}

		sum := sha256.Sum256([]byte(token))
		accepted |= subtle.ConstantTimeCompare(presentedSum[:], sum[:])
	}

	return accepted == 1
}

// service is the gRPC face of Server; it is only reachable through Serve's interceptors.
type service struct {
	trustdapi.UnimplementedTrustdServiceServer

	server *Server
}

// Certificate implements trustdapi.TrustdServiceServer.
func (svc *service) Certificate(ctx context.Context, req *trustdapi.CertificateRequest) (*trustdapi.CertificateResponse, error) {
	return svc.server.sign(ctx, req.GetCsr())
}

// sign authenticates the request, signs its PEM CSR under the server policy and returns the OS CA
// bundle with the certificate. The os root is read once and serves both steps.
func (s *Server) sign(ctx context.Context, csrPEM []byte) (*trustdapi.CertificateResponse, error) {
	root, err := s.osRoot(ctx)
	if err != nil {
		return nil, err
	}

	if err = s.authenticate(ctx, root.TypedSpec()); err != nil {
		return nil, err
	}

	csr, err := parseCSR(csrPEM)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}

	if root.TypedSpec().IssuingKey == "" {
		return nil, status.Error(codes.FailedPrecondition, "this node holds no OS CA key and cannot sign: send the request to a control-plane node")
	}

	ca, err := s.issuingCA.get(caPEM{crt: root.TypedSpec().IssuingCert, key: root.TypedSpec().IssuingKey})
	if err != nil {
		s.logger.Error("trustd cannot load the OS CA", zap.Error(err))

		return nil, status.Error(codes.Internal, "the OS CA of this node is unusable")
	}

	profile, err := serverProfile(csr, ca)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}

	requester, ok := parseAddr(peerHost(ctx))
	if !ok {
		return nil, status.Error(codes.InvalidArgument, "the request does not come from an IP address")
	}

	owners, err := s.ownershipFor(ctx, requester)
	if err != nil {
		s.logger.Error("trustd cannot tell who owns which names", zap.Error(err))

		return nil, status.Error(codes.Unavailable, "trustd is not ready: the cluster's names cannot be read")
	}

	if err = owners.checkProfile(profile); err != nil {
		s.logger.Warn("trustd request refused: names the requester does not own", zap.String("peer", requester.String()), zap.Error(err))
		s.auditRefused(ctx, err.Error())

		return nil, status.Error(codes.PermissionDenied, err.Error())
	}

	if profile.Lifetime, err = s.signingLifetime(ctx); err != nil {
		return nil, err
	}

	caBundle, err := s.acceptedCABundle(ctx)
	if err != nil {
		return nil, err
	}

	signedAt := time.Now()

	// parseCSR has checked the CSR's signature, so its key is signed directly.
	der, serial, err := ca.Sign(csr.PublicKey, profile, signedAt)
	if err != nil {
		s.logger.Error("trustd failed to sign a CSR", zap.Error(err))

		return nil, status.Error(codes.Internal, "error signing the certificate")
	}

	crtPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})

	// The profile is what was signed: the certificate is not parsed back to log it.
	s.logger.Info("trustd signed a certificate",
		zap.String("peer", peerHost(ctx)),
		zap.String("cn", profile.CommonName),
		zap.Strings("dns_names", profile.DNSNames),
		zap.Stringers("ip_addresses", profile.IPAddresses),
		zap.String("serial", serial.Text(16)),
		zap.Time("not_after", signedAt.Add(profile.Lifetime)),
	)

	s.auditSigned(ctx, profile, serial, ca.Crt.PublicKey, csr.PublicKey, signedAt)
	s.recordMember(ctx, requester, profile)

	return &trustdapi.CertificateResponse{Ca: caBundle, Crt: crtPEM}, nil
}

func (s *Server) osRoot(ctx context.Context) (*pki.RootSecret, error) {
	root, err := safe.StateGetByID[*pki.RootSecret](ctx, s.state, pki.RootOS)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil, status.Error(codes.Unavailable, "trustd is not ready: the os root is not loaded yet")
		}

		return nil, status.Error(codes.Internal, "error reading the os root")
	}

	return root, nil
}

// signingLifetime is the lifetime of what the server signs: the control plane's own api lifetime
// unless Options.Lifetime fixed one, read per request so that a config change applies at once.
func (s *Server) signingLifetime(ctx context.Context) (time.Duration, error) {
	if !s.fromConfig {
		return s.lifetime, nil
	}

	request, err := safe.StateGetByID[*pki.CertificateRequest](ctx, s.state, pki.CertAPI)
	if err != nil {
		if state.IsNotFoundError(err) {
			return s.lifetime, nil
		}

		return 0, status.Error(codes.Internal, "error reading the api certificate request")
	}

	return request.TypedSpec().Lifetime, nil
}

// acceptedCABundle is the PEM bundle of the OS CAs the worker's API must trust for clients.
func (s *Server) acceptedCABundle(ctx context.Context) ([]byte, error) {
	accepted, err := safe.StateGetByID[*pki.AcceptedCA](ctx, s.state, pki.RootOS)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil, status.Error(codes.Unavailable, "trustd is not ready: the accepted OS CAs are not loaded yet")
		}

		return nil, status.Error(codes.Internal, "error reading the accepted OS CAs")
	}

	bundle, err := s.caBundle.get(accepted.TypedSpec().Certificates)
	if err != nil {
		return nil, status.Error(codes.Unavailable, "trustd is not ready: "+err.Error())
	}

	return bundle, nil
}

// peerHost is the peer's IP address (without port), the key of the rate limiter and of the logs.
func peerHost(ctx context.Context) string {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "unknown"
	}

	host, _, err := net.SplitHostPort(p.Addr.String())
	if err != nil {
		return p.Addr.String()
	}

	return host
}
