package api

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/revocation"
)

// Metadata the director sets for the internal server (and a forwarding control plane for the
// target node) so that the audit log names the caller: its certificate's subject and serial and
// its address. Like the roles, they are replaced on every call, except that a forwarding control
// plane (os:impersonator) asserts the original caller's.
const (
	callerSubjectKey = "nodepki-caller-subject-bin"
	callerSerialKey  = "nodepki-caller-serial"
	callerAddressKey = "nodepki-caller-address"
	forwardedByKey   = "nodepki-forwarded-by-bin"
)

// setCallerMetadata writes the caller of a call into the metadata it is routed with.
func setCallerMetadata(ctx context.Context, md metadata.MD, v *verdict) {
	subject, serial := "", ""
	if len(v.chain) > 0 {
		subject, serial = v.chain[0].Subject.String(), revocation.FormatSerial(v.chain[0].SerialNumber)
	}

	if v.impersonator && len(md.Get(callerSubjectKey)) == 1 {
		md.Set(forwardedByKey, subject)

		return
	}

	md.Set(callerSubjectKey, subject)
	md.Set(callerSerialKey, serial)
	md.Set(callerAddressKey, peerAddress(ctx))
	md.Delete(forwardedByKey)
}

// callerOf is the caller of a call of the internal server, for the audit log.
func callerOf(ctx context.Context) *audit.Caller {
	md, _ := metadata.FromIncomingContext(ctx)
	first := func(key string) string {
		if values := md.Get(key); len(values) > 0 {
			return values[0]
		}

		return ""
	}

	return &audit.Caller{
		Subject:     first(callerSubjectKey),
		Serial:      first(callerSerialKey),
		Roles:       rolesFromContext(ctx),
		Address:     first(callerAddressKey),
		ForwardedBy: first(forwardedByKey),
	}
}

// record appends events to the audit log, if the node keeps one. A failed write is logged: the
// operation it records is done and cannot be undone.
func (s *Server) record(events ...audit.Event) {
	if s.opts.Audit == nil {
		return
	}

	for _, e := range events {
		if err := s.opts.Audit.Record(e); err != nil {
			s.logger.Error("error writing the audit log", zap.String("event", e.Type), zap.Error(err))
		}
	}
}

// auditConfigChange records an applied config: the change, and the revocations and root changes it made.
func (s *Server) auditConfigChange(ctx context.Context, req *node.ApplyConfigurationRequest, before, after *machineconfig.Config) {
	if s.opts.Audit == nil {
		return
	}

	typ := audit.TypeConfigApplied
	if len(req.GetPatches()) > 0 {
		typ = audit.TypeConfigPatched
	}

	events, err := audit.ConfigEvents(typ, callerOf(ctx), before, after)
	if err != nil {
		s.logger.Error("error describing a config change for the audit log", zap.Error(err))

		events = []audit.Event{{Type: typ, Caller: callerOf(ctx)}}
	}

	s.record(events...)
}

// auditIssued records a client certificate issued (PEM crtPEM, signed by issuer) with lifetime ttl.
func (s *Server) auditIssued(ctx context.Context, typ string, crtPEM []byte, issuer *x509.Certificate, ttl time.Duration) {
	if s.opts.Audit == nil {
		return
	}

	e := audit.Event{Type: typ, Caller: callerOf(ctx), Certificate: &audit.Certificate{Lifetime: ttl.String()}}

	crt, err := certs.ParseCertificate(crtPEM)
	if err != nil {
		s.logger.Error("error reading an issued certificate for the audit log", zap.Error(err))
	} else {
		e.Certificate = describeCertificate(crt, issuer, ttl)
	}

	s.record(e)
}

// auditKubeconfig records an admin kubeconfig issued; its certificate is read back from it.
func (s *Server) auditKubeconfig(ctx context.Context, kubeconfig []byte, issuer *x509.Certificate, ttl time.Duration) {
	if s.opts.Audit == nil {
		return
	}

	var crtPEM []byte

	if cfg, err := clientcmd.Load(kubeconfig); err == nil {
		for _, user := range cfg.AuthInfos {
			crtPEM = user.ClientCertificateData
		}
	}

	s.auditIssued(ctx, audit.TypeKubeconfigIssued, crtPEM, issuer, ttl)
}

func describeCertificate(crt, issuer *x509.Certificate, ttl time.Duration) *audit.Certificate {
	c := &audit.Certificate{
		Subject:     crt.Subject.String(),
		CommonName:  crt.Subject.CommonName,
		Roles:       crt.Subject.Organization,
		Serial:      revocation.FormatSerial(crt.SerialNumber),
		Fingerprint: certs.Fingerprint(crt),
		NotAfter:    crt.NotAfter.UTC(),
		Lifetime:    ttl.String(),
	}

	if issuer != nil {
		c.Issuer = certs.Fingerprint(issuer)
	}

	return c
}

// auditRefused counts a call refused to peer (host:port or host) in the audit log.
func (s *Server) auditRefused(peer, method string, err error) {
	if s.opts.Audit == nil {
		return
	}

	if host, _, splitErr := net.SplitHostPort(peer); splitErr == nil {
		peer = host
	}

	if recordErr := s.opts.Audit.Refused(audit.ServiceAPI, peer, method, status.Convert(err).Message()); recordErr != nil {
		s.logger.Error("error writing the audit log", zap.String("event", audit.TypeRefused), zap.Error(recordErr))
	}
}

// isRefusal tells the errors that refuse a caller (its credential or its roles) from the others.
func isRefusal(err error) bool {
	code := status.Code(err)

	return code == codes.PermissionDenied || code == codes.Unauthenticated
}

// auditUnaryRefusals and auditStreamRefusals record the calls of the internal server refused for
// the caller's roles (by authorize, or by the access rule of the State service).
func (s *Server) auditUnaryRefusals(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if isRefusal(err) {
		s.auditRefused(callerOf(ctx).Address, info.FullMethod, err)
	}

	return resp, err
}

func (s *Server) auditStreamRefusals(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	if isRefusal(err) {
		s.auditRefused(callerOf(ss.Context()).Address, info.FullMethod, err)
	}

	return err
}

// Audit streams the audit log (see node.proto).
func (n *nodeService) Audit(req *node.AuditRequest, stream grpc.ServerStreamingServer[node.AuditLine]) error {
	log := n.server.opts.Audit
	if log == nil {
		return status.Errorf(codes.FailedPrecondition, "node %s keeps no audit log: nodepkid keeps one in --state-dir", n.server.nodeName())
	}

	if req.GetSinceSeconds() < 0 {
		return status.Errorf(codes.InvalidArgument, "since_seconds: %d is negative: give the age of the oldest event to read, or 0 for all", req.GetSinceSeconds())
	}

	var since time.Time
	if seconds := req.GetSinceSeconds(); seconds > 0 {
		since = time.Now().Add(-time.Duration(seconds) * time.Second)
	}

	err := log.Stream(stream.Context().Done(), since, req.GetFollow(), func(line audit.Line) error {
		if line.Warning != "" {
			n.server.logger.Warn("audit log line skipped", zap.String("warning", line.Warning))
		}

		return stream.Send(&node.AuditLine{Line: line.Raw, Warning: line.Warning})
	})

	switch {
	case errors.Is(err, audit.ErrFollowerBehind):
		return status.Error(codes.ResourceExhausted, err.Error())
	case err != nil && stream.Context().Err() == nil && status.Code(err) == codes.Unknown:
		return status.Errorf(codes.Internal, "error reading the audit log: %s", strings.TrimSpace(err.Error()))
	default:
		return err
	}
}
