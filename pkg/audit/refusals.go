package audit

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Refused services.
const (
	ServiceAPI    = "api"
	ServiceTrustd = "trustd"
)

const (
	// refusalWindow is the aggregation period of refusals.
	refusalWindow = time.Minute
	// maxRefusalPeers bounds the peers counted apart within one minute; refusals of further
	// peers are counted together under OtherPeers, so that a flood from many addresses writes a
	// bounded number of lines too.
	maxRefusalPeers = 256
	// refusalFlushInterval is how often Run writes the counts of the minutes that ended.
	refusalFlushInterval = 10 * time.Second
)

// OtherPeers is the peer of the refusals counted together once maxRefusalPeers peers were
// refused in one minute.
const OtherPeers = "other"

type refusalKey struct{ service, peer string }

// pendingRefusals are the refusals of one peer in one minute not yet written.
type pendingRefusals struct {
	window         time.Time
	count          int
	method, reason string
}

// refusals aggregates refused calls per service, peer and minute.
type refusals struct {
	mu      sync.Mutex
	windows map[refusalKey]*pendingRefusals
}

func (r *refusals) init() { r.windows = map[refusalKey]*pendingRefusals{} }

// Refused records a refused call of peer (an IP address) to service (ServiceAPI, ServiceTrustd).
// The first refusal of a peer in a minute is written at once (count 1); the others of that
// minute are counted and written as one line when the minute has ended (FlushRefusals, Run).
// reason must not hold secrets: it is written as given.
func (l *Log) Refused(service, peer, method, reason string) error {
	now := l.opts.Clock().UTC()

	flushErr := l.FlushRefusals(now)

	window := now.Truncate(refusalWindow)
	key := refusalKey{service: service, peer: peer}

	l.refusals.mu.Lock()

	if _, ok := l.refusals.windows[key]; !ok && len(l.refusals.windows) >= maxRefusalPeers {
		key.peer = OtherPeers
	}

	if p, ok := l.refusals.windows[key]; ok {
		if p.count == 0 {
			p.method, p.reason = method, reason
		}

		p.count++
		l.refusals.mu.Unlock()

		return flushErr
	}

	l.refusals.windows[key] = &pendingRefusals{window: window}
	l.refusals.mu.Unlock()

	return errors.Join(flushErr, l.Record(Event{
		Time: now,
		Type: TypeRefused,
		Refusal: &Refusal{
			Service: service, Peer: key.peer, Count: 1, Method: method, Reason: reason, Window: window,
		},
	}))
}

// FlushRefusals writes the counts of the minutes that ended by now (of all minutes when now is
// zero).
func (l *Log) FlushRefusals(now time.Time) error {
	type due struct {
		key refusalKey
		p   *pendingRefusals
	}

	var flushed []due

	l.refusals.mu.Lock()

	for key, p := range l.refusals.windows {
		if now.IsZero() || !now.Before(p.window.Add(refusalWindow)) {
			delete(l.refusals.windows, key)

			if p.count > 0 {
				flushed = append(flushed, due{key: key, p: p})
			}
		}
	}

	l.refusals.mu.Unlock()

	var errs []error

	for _, d := range flushed {
		errs = append(errs, l.Record(Event{
			Time: now,
			Type: TypeRefused,
			Refusal: &Refusal{
				Service: d.key.service, Peer: d.key.peer, Count: d.p.count, Method: d.p.method, Reason: d.p.reason, Window: d.p.window,
			},
		}))
	}

	return errors.Join(errs...)
}

// Run writes the refusal counts of each minute once it has ended, until ctx is done.
func (l *Log) Run(ctx context.Context) error {
	ticker := time.NewTicker(refusalFlushInterval)
	defer ticker.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			if err := l.FlushRefusals(l.opts.Clock()); err != nil {
				l.logger.Error("error writing refusal counts to the audit log", zap.Error(err))
			}
		}
	}
}
