package trustd

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Default per-peer rate limit: a worker needs one request a day, so this only stops floods and
// token guessing.
const (
	DefaultRateLimit = rate.Limit(10)
	DefaultRateBurst = 20
)

// maxTrackedPeers bounds the limiter table; past it, peers whose bucket is full again are forgotten.
const maxTrackedPeers = 4096

// peerLimiter keeps one token bucket per peer IP.
type peerLimiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
}

func newPeerLimiter(limit rate.Limit, burst int) *peerLimiter {
	return &peerLimiter{limit: limit, burst: burst, buckets: map[string]*rate.Limiter{}}
}

// allow takes one token from the peer's bucket.
func (l *peerLimiter) allow(peer string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()

	bucket, ok := l.buckets[peer]
	if !ok {
		if len(l.buckets) >= maxTrackedPeers {
			l.forgetIdle(now)
		}

		bucket = rate.NewLimiter(l.limit, l.burst)
		l.buckets[peer] = bucket
	}

	return bucket.AllowN(now, 1)
}

// forgetIdle drops the buckets that have refilled completely: forgetting them changes nothing.
func (l *peerLimiter) forgetIdle(now time.Time) {
	for peer, bucket := range l.buckets {
		if bucket.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, peer)
		}
	}
}
