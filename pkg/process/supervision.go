package process

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// Supervision is what a controller that runs a process (an etcd member, a kube-apiserver) keeps
// across its passes: the process, how often it was started again, when the next start may come
// (exponential backoff between MinBackoff and MaxBackoff) and the last error.
type Supervision struct {
	// Name is the program ("etcd"), Address the node it runs for; both name it in errors and logs.
	Name    string
	Address netip.Addr
	// LogFile is the process's output, whose last line explains an exit.
	LogFile                string
	MinBackoff, MaxBackoff time.Duration

	// Proc is the running process, nil when none runs.
	Proc      *Process
	Restarts  int
	RetryAt   time.Time
	StartedAt time.Time
	LastErr   string
	backoff   time.Duration
}

// Running is the exit channel of the running process; nil (never ready) when none runs.
func (s *Supervision) Running() <-chan struct{} {
	if s.Proc == nil {
		return nil
	}

	return s.Proc.Exited()
}

// Shutdown stops the process, giving it grace to stop on SIGTERM.
func (s *Supervision) Shutdown(logger *zap.Logger, grace time.Duration) {
	if s.Proc == nil {
		return
	}

	if err := s.Proc.Stop(context.Background(), grace); err != nil {
		logger.Warn("error stopping "+s.Name, zap.Error(err))
	}

	s.Proc = nil
}

// Exited records that the process exited, with the last line of its log, and backs off.
func (s *Supervision) Exited(logger *zap.Logger) {
	err := s.Proc.Err()
	s.Proc = nil
	s.LastErr = fmt.Sprintf("%s on %s exited: %v: %s (see %s)", s.Name, s.Address, err, LastLogLine(s.LogFile), s.LogFile)
	s.RetryAt = time.Now().Add(s.nextBackoff())

	logger.Error(s.Name+" exited", zap.Error(err), zap.String("last_log", s.LastErr), zap.Time("retry_at", s.RetryAt))
}

// Failed records a start that could not happen (or failed) and backs off.
func (s *Supervision) Failed(logger *zap.Logger, err error) {
	s.LastErr = err.Error()
	s.RetryAt = time.Now().Add(s.nextBackoff())

	logger.Error("error starting "+s.Name, zap.Error(err), zap.Time("retry_at", s.RetryAt))
}

// ResetBackoffAfter forgets earlier failures once the process has been fine for d since its start.
func (s *Supervision) ResetBackoffAfter(d time.Duration) {
	if time.Since(s.StartedAt) > d {
		s.backoff = 0
	}
}

func (s *Supervision) nextBackoff() time.Duration {
	s.backoff = min(max(s.backoff*2, s.MinBackoff), s.MaxBackoff)

	return s.backoff
}

// Started records a newly started process; every start after the first counts as a restart.
func (s *Supervision) Started(proc *Process) {
	if !s.StartedAt.IsZero() {
		s.Restarts++
	}

	s.Proc = proc
	s.StartedAt = time.Now()
}
