package api

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/revocation"
)

var (
	errCredentialExpired   = status.Error(codes.Unauthenticated, "the client certificate has expired: the call is ended")
	errCredentialUntrusted = status.Error(codes.Unauthenticated, "the client certificate is no longer trusted by this node: the call is ended")
	errCredentialRevoked   = status.Error(codes.Unauthenticated, "the client certificate has been revoked: the call is ended")
)

// boundToCredential returns a context of the call that ends with the credential that
// authenticated it: at the earliest NotAfter of its verified chain, and as soon as the client
// trust changes so that the chain no longer verifies (its CA removed, or the credential revoked). Without it, a watch opened before its CA was
// removed or its certificate expired would stream for as long as the client likes. The check of
// the chain is verifyClientCertificate, the same as for new calls.
func (s *Server) boundToCredential(ctx context.Context, v *verdict) context.Context {
	ctx, cancel := context.WithCancelCause(ctx)

	// A timer, not a context deadline: a deadline travels with the backend call as grpc-timeout,
	// the backend's own context then ends at the same moment, and a watch that returns at its
	// context's end (cosi's does) could reach the client as a clean end of stream instead of the
	// credential's expiry. A cancellation is seen by the proxy first and reported by reportEnded.
	expiry := time.AfterFunc(time.Until(v.notAfter), func() { cancel(errCredentialExpired) })

	go func() {
		defer expiry.Stop()
		defer cancel(nil)

		version := v.poolVersion

		for {
			trust, current, changed := s.material.clientTrustChanged()

			if current != version {
				if _, err := verifyClientCertificate(v.chain, trust, time.Now()); err != nil {
					if revoked := (*revocation.RevokedError)(nil); errors.As(err, &revoked) {
						cancel(errors.Join(errCredentialRevoked, err))
					} else {
						cancel(errors.Join(errCredentialUntrusted, err))
					}

					return
				}

				version = current
			}

			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
		}
	}()

	return ctx
}

// reportEnded wraps the public handler. A call ended by boundToCredential reaches the proxy as a
// canceled backend, which the client would see as a bare "context canceled"; it is told why
// instead, from the connection's verdict at that moment (revoked, CA removed, or expired).
func (s *Server) reportEnded(h grpc.StreamHandler) grpc.StreamHandler {
	return func(srv any, stream grpc.ServerStream) error {
		err := h(srv, stream)
		if status.Code(err) != codes.Canceled || stream.Context().Err() != nil {
			return err
		}

		if v := s.guard.verdictFor(stream.Context(), time.Now()); v.err != nil {
			return status.Error(codes.Unauthenticated, "the call is ended: "+status.Convert(v.err).Message())
		}

		return err
	}
}
