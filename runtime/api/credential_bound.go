package api

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

var (
	errCredentialExpired   = status.Error(codes.Unauthenticated, "the client certificate has expired: the call is ended")
	errCredentialUntrusted = status.Error(codes.Unauthenticated, "the client certificate is no longer trusted by this node: the call is ended")
)

// boundToCredential returns a context of the call that ends with the credential that
// authenticated it: at the earliest NotAfter of its verified chain, and as soon as the accepted
// pool changes so that the chain no longer verifies. Without it, a watch opened before its CA was
// removed or its certificate expired would stream for as long as the client likes. The check of
// the chain is verifyClientCertificate, so a later check added there (revocation) ends calls too.
func (s *Server) boundToCredential(ctx context.Context, v *verdict) context.Context {
	ctx, cancelDeadline := context.WithDeadlineCause(ctx, v.notAfter, errCredentialExpired)
	ctx, cancel := context.WithCancelCause(ctx)

	go func() {
		defer cancelDeadline()
		defer cancel(nil)

		version := v.poolVersion

		for {
			pool, current, changed := s.material.clientCAsChanged()

			if current != version {
				if _, err := verifyClientCertificate(v.chain, pool, time.Now()); err != nil {
					cancel(errors.Join(errCredentialUntrusted, err))

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
