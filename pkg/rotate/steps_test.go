package rotate

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// attempts returns a function that fails with errs in turn, then succeeds with "done", and
// records the (fake) time of every call.
func attempts(errs ...error) (func() (string, error), *[]time.Duration) {
	start := time.Now()
	calls := &[]time.Duration{}

	return func() (string, error) {
		*calls = append(*calls, time.Since(start))

		if len(*calls) <= len(errs) {
			return "", errs[len(*calls)-1]
		}

		return "done", nil
	}, calls
}

func TestPoll(t *testing.T) {
	t.Parallel()

	notYet := errors.New("not yet")

	for _, tc := range []struct {
		name      string
		errs      []error
		timeout   time.Duration
		wantErr   string
		wantCalls []time.Duration
	}{
		{
			name:      "first try",
			timeout:   time.Second,
			wantCalls: []time.Duration{0},
		},
		{
			name:      "every pollInterval until it passes",
			errs:      []error{notYet, notYet},
			timeout:   time.Second,
			wantCalls: []time.Duration{0, pollInterval, 2 * pollInterval},
		},
		{
			name:      "the last error after the timeout",
			errs:      []error{notYet, notYet, notYet, errors.New("still not")},
			timeout:   3*pollInterval + pollInterval/2,
			wantErr:   "not done after 350ms: still not",
			wantCalls: []time.Duration{0, pollInterval, 2 * pollInterval, 3 * pollInterval},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			synctest.Test(t, func(t *testing.T) {
				fn, calls := attempts(tc.errs...)

				detail, err := poll(t.Context(), tc.timeout, fn)
				if tc.wantErr != "" {
					require.EqualError(t, err, tc.wantErr)
				} else {
					require.NoError(t, err)
					assert.Equal(t, "done", detail)
				}

				assert.Equal(t, tc.wantCalls, *calls)
			})
		})
	}
}

func TestPollCanceled(t *testing.T) {
	t.Parallel()

	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
		defer cancel()

		fn, calls := attempts(errors.New("a"), errors.New("b"), errors.New("c"))

		_, err := poll(ctx, time.Minute, fn)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, []time.Duration{0, pollInterval}, *calls)
	})
}

func TestRetryUnavailable(t *testing.T) {
	t.Parallel()

	unavailable := status.Error(codes.Unavailable, "node restarting")
	denied := status.Error(codes.PermissionDenied, "no")

	for _, tc := range []struct {
		name      string
		errs      []error
		wantCode  codes.Code
		wantCalls int
	}{
		{name: "success", wantCode: codes.OK, wantCalls: 1},
		{name: "unavailable, then success", errs: []error{unavailable, unavailable}, wantCode: codes.OK, wantCalls: 3},
		{name: "another error is final", errs: []error{unavailable, denied, unavailable}, wantCode: codes.PermissionDenied, wantCalls: 2},
		{
			// The try due exactly at the deadline may or may not run.
			name:      "unavailable until applyRetryTimeout",
			errs:      make([]error, 1000),
			wantCode:  codes.Unavailable,
			wantCalls: int(applyRetryTimeout / applyRetryInterval),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			for i := range tc.errs {
				if tc.errs[i] == nil {
					tc.errs[i] = unavailable
				}
			}

			synctest.Test(t, func(t *testing.T) {
				fn, calls := attempts(tc.errs...)

				detail, err := retryUnavailable(t.Context(), fn)
				assert.Equal(t, tc.wantCode, status.Code(err), "%v", err)

				if tc.wantCode == codes.OK {
					assert.Equal(t, "done", detail)
				}

				if tc.wantCode == codes.Unavailable {
					require.Contains(t, []int{tc.wantCalls, tc.wantCalls + 1}, len(*calls))
				} else {
					require.Len(t, *calls, tc.wantCalls)
				}

				for i, at := range *calls {
					assert.Equal(t, time.Duration(i)*applyRetryInterval, at)
				}
			})
		})
	}
}
