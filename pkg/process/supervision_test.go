package process

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"go.uber.org/zap"
)

func TestSupervisionBacksOffAndCountsRestarts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := Supervision{Name: "etcd", MinBackoff: time.Second, MaxBackoff: 5 * time.Second}
		logger := zap.NewNop()

		var waits []time.Duration

		for range 5 {
			s.Failed(logger, errors.New("boom"))
			waits = append(waits, time.Until(s.RetryAt))
		}

		assert.Equal(t, []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}, waits)
		assert.Equal(t, "boom", s.LastErr)

		s.Started(&Process{})
		assert.Equal(t, 0, s.Restarts, "the first start is no restart")

		s.ResetBackoffAfter(time.Minute)
		s.Failed(logger, errors.New("again"))
		assert.Equal(t, 5*time.Second, time.Until(s.RetryAt), "not fine for long enough: the backoff stays")

		s.Started(&Process{})
		assert.Equal(t, 1, s.Restarts)

		time.Sleep(2 * time.Minute) // fake time of the bubble: the process has been fine for two minutes
		s.ResetBackoffAfter(time.Minute)
		s.Failed(logger, errors.New("late"))
		assert.Equal(t, time.Second, time.Until(s.RetryAt), "fine long enough: the backoff starts over")
	})
}
