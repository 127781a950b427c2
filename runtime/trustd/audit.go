package trustd

import (
	"context"
	"crypto"
	"math/big"
	"time"

	"go.uber.org/zap"

	trustdapi "github.com/nodepki/nodepki/api/trustd"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/revocation"
)

// auditSigned records a signed certificate in the audit log, if the node keeps one: the
// requester, the names and serial signed, never the CSR or the token.
func (s *Server) auditSigned(ctx context.Context, profile certs.Profile, serial *big.Int, caPublicKey crypto.PublicKey, pub crypto.PublicKey, signedAt time.Time) {
	if s.audit == nil {
		return
	}

	c := &audit.Certificate{
		CommonName: profile.CommonName,
		DNSNames:   profile.DNSNames,
		Serial:     revocation.FormatSerial(serial),
		NotAfter:   signedAt.Add(profile.Lifetime).UTC(),
		Lifetime:   profile.Lifetime.String(),
		Requester:  peerHost(ctx),
	}

	for _, ip := range profile.IPAddresses {
		c.IPAddresses = append(c.IPAddresses, ip.String())
	}

	// A key that cannot be encoded was not signed either: the errors only leave fields empty.
	c.Fingerprint, _ = certs.PublicKeyFingerprint(pub)
	c.Issuer, _ = certs.PublicKeyFingerprint(caPublicKey)

	if err := s.audit.Record(audit.Event{Type: audit.TypeTrustdSigned, Certificate: c}); err != nil {
		s.logger.Error("error writing the audit log", zap.String("event", audit.TypeTrustdSigned), zap.Error(err))
	}
}

// auditRefused counts a refused request in the audit log (per peer and minute). reason must not
// hold the token.
func (s *Server) auditRefused(ctx context.Context, reason string) {
	if s.audit == nil {
		return
	}

	if err := s.audit.Refused(audit.ServiceTrustd, peerHost(ctx), trustdapi.TrustdService_Certificate_FullMethodName, reason); err != nil {
		s.logger.Error("error writing the audit log", zap.String("event", audit.TypeRefused), zap.Error(err))
	}
}
