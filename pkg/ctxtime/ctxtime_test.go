package ctxtime_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/ctxtime"
)

func TestSleep(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name     string
		deadline time.Duration
		want     error
		slept    time.Duration
	}{
		{"the whole duration", time.Hour, nil, time.Minute},
		{"cut short by the context", 10 * time.Second, context.DeadlineExceeded, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			synctest.Test(t, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(t.Context(), tc.deadline)
				defer cancel()

				start := time.Now()

				require.ErrorIs(t, ctxtime.Sleep(ctx, time.Minute), tc.want)
				require.Equal(t, tc.slept, time.Since(start))
			})
		})
	}
}
