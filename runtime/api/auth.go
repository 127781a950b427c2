package api

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nodepki/nodepki/pkg/role"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Metadata keys of the node API.
const (
	// NodeMetadataKey names the node a call is addressed to; absent means the node that answers.
	NodeMetadataKey = "node"
	// NodesMetadataKey is talosctl's one-to-many form; a single value is treated like NodeMetadataKey.
	NodesMetadataKey = "nodes"
	// RoleMetadataKey carries the verified roles of the caller, one per value: from the director to
	// the internal server, and from a forwarding control plane to the target node.
	RoleMetadataKey = "nodepki-role"
)

var (
	errNotAuthorized   = status.Error(codes.PermissionDenied, "not authorized")
	errNoClientCert    = status.Error(codes.Unauthenticated, "a client certificate is required")
	errNoForwarding    = status.Error(codes.PermissionDenied, "no request forwarding on this node (worker)")
	errWriteNotAllowed = status.Error(codes.PermissionDenied, "write access is not allowed")
)

// parseRoles keeps the known roles of values (trimmed, sorted, deduplicated) and reports whether
// the impersonator role is among them. Unknown roles are dropped: they grant nothing.
func parseRoles(values []string) (roles []string, impersonator bool) {
	for _, v := range values {
		v = strings.TrimSpace(v)

		switch {
		case v == role.Impersonator:
			impersonator = true
		case role.IsKnown(v):
			roles = append(roles, v)
		}
	}

	slices.Sort(roles)

	return slices.Compact(roles), impersonator
}

func hasAnyRole(roles, allowed []string) bool {
	return slices.ContainsFunc(roles, func(r string) bool { return slices.Contains(allowed, r) })
}

// authenticate verifies the caller's client certificate against the current accepted OS CAs and
// returns the roles the call runs with.
//
// The TLS handshake only asks for a certificate (RequestClientCert) and leaves the chain
// unverified; the check happens here, per call, for three reasons:
//   - a handshake failure reaches the client as an opaque TLS alert ("bad certificate", or in TLS 1.3
//     a reset after the handshake that gRPC retries as Unavailable), while a gRPC status carries the
//     exact reason: unknown authority, expired, or missing client-auth usage;
//   - with no CA list in the CertificateRequest, Go clients always send their certificate, so a
//     certificate from an unknown CA is reported as such instead of as "certificate required";
//   - every call sees the current CA pool, so removing a CA takes effect on established
//     connections too, while adding one never disturbs them.
//
// A connection without any certificate completes the handshake (so that `openssl s_client` can
// inspect the server certificate) but every call on it is refused here. Possession of the leaf's
// key is still proven in the handshake (CertificateVerify).
func authenticate(ctx context.Context, pool *x509.CertPool, now time.Time) ([]string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, errNoClientCert
	}

	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return nil, errNoClientCert
	}

	chain := tlsInfo.State.PeerCertificates
	if err := verifyClientCertificate(chain, pool, now); err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}

	roles, impersonator := parseRoles(chain[0].Subject.Organization)

	if impersonator {
		md, _ := metadata.FromIncomingContext(ctx)
		if asserted := md.Get(RoleMetadataKey); len(asserted) > 0 {
			roles, _ = parseRoles(asserted)
		}
	}

	if len(roles) == 0 {
		return nil, errNotAuthorized
	}

	return roles, nil
}

// verifyClientCertificate checks that chain[0] chains to pool at now and that every non-CA
// certificate of the verified chain has exactly the client-auth extended key usage (a
// server+client certificate is refused, as Talos does since 1.12).
func verifyClientCertificate(chain []*x509.Certificate, pool *x509.CertPool, now time.Time) error {
	if pool == nil {
		// A nil Roots would make Verify trust the system roots.
		pool = x509.NewCertPool()
	}

	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}

	chains, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: intermediates,
		CurrentTime:   now,
		// Usages are checked below with a message that says what is missing.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return err
	}

	for _, c := range chains[0] {
		if c.IsCA {
			continue
		}

		if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(c.UnknownExtKeyUsage) > 0 {
			return fmt.Errorf("certificate %q is missing the client auth extended key usage", c.Subject)
		}
	}

	return nil
}

type rolesContextKey struct{}

func withRoles(ctx context.Context, roles []string) context.Context {
	return context.WithValue(ctx, rolesContextKey{}, roles)
}

func rolesFromContext(ctx context.Context) []string {
	roles, _ := ctx.Value(rolesContextKey{}).([]string)

	return roles
}
