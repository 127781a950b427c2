package api

import (
	"context"
	"crypto/x509"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/pkg/role"
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
	errSecondHop       = status.Error(codes.PermissionDenied, "a forwarded call is not forwarded again")
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

// authenticate returns the roles a call runs with, from the verdict on the caller's client
// certificate (see guard.verdictFor) and, for the impersonator role only, the roles it asserts.
//
// The TLS handshake only asks for a certificate (RequestClientCert) and leaves the chain
// unverified; the check happens on the calls of the connection, for three reasons:
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
func authenticate(ctx context.Context, v *verdict) ([]string, error) {
	if v.err != nil {
		return nil, v.err
	}

	roles := v.roles

	if v.impersonator {
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

func unauthenticated(err error) error {
	return status.Error(codes.Unauthenticated, err.Error())
}

// verifyClientCertificate checks that chain[0] is a leaf (not a CA) that chains to the trust's
// pool at now, that every non-CA certificate of the verified chain has exactly the client-auth
// extended key usage (a server+client certificate is refused, as Talos does since 1.12) and that
// no certificate of it is revoked (a *revocation.RevokedError). It returns the verified chain.
func verifyClientCertificate(chain []*x509.Certificate, trust clientTrust, now time.Time) ([]*x509.Certificate, error) {
	pool := trust.pool

	if chain[0].IsCA {
		return nil, fmt.Errorf("certificate %q is a CA certificate: a client authenticates with a leaf certificate", chain[0].Subject)
	}

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
		return nil, err
	}

	for _, c := range chains[0] {
		if c.IsCA {
			continue
		}

		if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) || len(c.UnknownExtKeyUsage) > 0 {
			return nil, fmt.Errorf("certificate %q is missing the client auth extended key usage", c.Subject)
		}
	}

	if entry, denied := trust.revoked.Denied(chains[0]); denied {
		return nil, &revocation.RevokedError{Subject: chain[0].Subject.String(), Entry: entry}
	}

	return chains[0], nil
}

type rolesContextKey struct{}

func withRoles(ctx context.Context, roles []string) context.Context {
	return context.WithValue(ctx, rolesContextKey{}, roles)
}

func rolesFromContext(ctx context.Context) []string {
	roles, _ := ctx.Value(rolesContextKey{}).([]string)

	return roles
}
