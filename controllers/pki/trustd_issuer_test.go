package pki

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// endpointErrors mimics the error of pkg/trustd.RequestCertificate: one wrapped error per endpoint.
type endpointErrors []error

func (e endpointErrors) Error() string   { return fmt.Sprint([]error(e)) }
func (e endpointErrors) Unwrap() []error { return e }

func TestRefused(t *testing.T) {
	t.Parallel()

	at := func(endpoint string, err error) error { return fmt.Errorf("trustd endpoint %q: %w", endpoint, err) }
	denied := status.Error(codes.PermissionDenied, "DNS SAN is the name of this control plane")
	badToken := status.Error(codes.Unauthenticated, "invalid join token")
	unavailable := status.Error(codes.Unavailable, "connection refused")

	for _, tc := range []struct {
		name    string
		err     error
		refused bool
	}{
		{"names refused", endpointErrors{at("a", denied)}, true},
		{"token refused", endpointErrors{at("a", badToken)}, true},
		{"refused by every endpoint", endpointErrors{at("a", badToken), at("b", denied)}, true},
		{"one endpoint unreachable", endpointErrors{at("a", unavailable), at("b", denied)}, false},
		{"unreachable", endpointErrors{at("a", unavailable)}, false},
		{"rate limited", endpointErrors{at("a", status.Error(codes.ResourceExhausted, "slow down"))}, false},
		{"timeout", endpointErrors{at("a", context.DeadlineExceeded)}, false},
		{"not a trustd answer", errors.New("boom"), false},
		{"no endpoint", endpointErrors{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			assert.Equal(t, tc.refused, refused(tc.err))
		})
	}
}
