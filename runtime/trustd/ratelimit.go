package trustd

import (
	"container/list"
	"net/netip"
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

// maxTrackedPeers bounds the limiter table; past it, the least recently seen peer is forgotten.
const maxTrackedPeers = 4096

// ipv6PeerBits is the prefix an IPv6 peer is limited by: one host (or one attacker) usually holds
// a whole /64, so limiting single addresses would let it rotate through 2^64 buckets.
const ipv6PeerBits = 64

// peerLimiter keeps one token bucket per peer (an IPv4 address or an IPv6 /64), at most max of
// them, least recently seen first out: every request costs O(1), table full or not.
type peerLimiter struct {
	limit rate.Limit
	burst int
	max   int

	mu      sync.Mutex
	buckets map[string]*list.Element // of *peerBucket
	order   *list.List               // most recently seen first
}

type peerBucket struct {
	key     string
	limiter *rate.Limiter
}

func newPeerLimiter(limit rate.Limit, burst, maxPeers int) *peerLimiter {
	return &peerLimiter{limit: limit, burst: burst, max: maxPeers, buckets: map[string]*list.Element{}, order: list.New()}
}

// allow takes one token from the peer's bucket.
func (l *peerLimiter) allow(peer string, now time.Time) bool {
	key := peerKey(peer)

	l.mu.Lock()
	defer l.mu.Unlock()

	elem, ok := l.buckets[key]
	if ok {
		l.order.MoveToFront(elem)
	} else {
		if l.order.Len() >= l.max {
			oldest := l.order.Back()
			l.order.Remove(oldest)
			delete(l.buckets, oldest.Value.(*peerBucket).key) //nolint:forcetypeassert // the list holds *peerBucket only
		}

		elem = l.order.PushFront(&peerBucket{key: key, limiter: rate.NewLimiter(l.limit, l.burst)})
		l.buckets[key] = elem
	}

	return elem.Value.(*peerBucket).limiter.AllowN(now, 1) //nolint:forcetypeassert // the list holds *peerBucket only
}

// peerKey is the bucket of a peer address: the address for IPv4, its /64 for IPv6.
func peerKey(peer string) string {
	addr, err := netip.ParseAddr(peer)
	if err != nil {
		return peer
	}

	addr = addr.Unmap().WithZone("")
	if addr.Is4() {
		return addr.String()
	}

	return netip.PrefixFrom(addr, ipv6PeerBits).Masked().String()
}
