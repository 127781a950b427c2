package pki

import (
	"bytes"
	"crypto/sha256"
	stdx509 "crypto/x509"
	"slices"
	"sync"
	"time"
)

// verificationsCapacity bounds the verifications one CertificateStatusesController remembers: a
// node has about ten certificates, each verified against one pool at a time.
const verificationsCapacity = 64

// verifications remembers the trusted outcomes of verify, for one controller. Every change of a
// root's trust pool re-verifies each certificate of the root, and a rotation step changes the
// pool's order and issuer but often not its CAs: the outcome is then the same. The key is the leaf
// and the set of the pool's CAs, which is all verify depends on besides the time; an entry holds
// until a CA of its chain expires (recheckAt). Untrusted outcomes are not kept, since a CA that is
// not valid yet may become so. Benchmark: docs/benchmarks.md.
type verifications struct {
	mu       sync.Mutex
	entries  map[verificationKey]verification
	order    []verificationKey
	next     int
	capacity int
}

type verificationKey struct {
	leaf, pool [sha256.Size]byte
}

func newVerifications(capacity int) *verifications {
	return &verifications{entries: map[verificationKey]verification{}, capacity: capacity}
}

// verify is verify(leaf, cas, now), from memory when the same leaf was found trusted by the same
// CAs and no CA of its chain has expired since.
func (c *verifications) verify(leaf *stdx509.Certificate, cas []*stdx509.Certificate, now time.Time) verification {
	key := verificationKey{leaf: sha256.Sum256(leaf.Raw), pool: poolDigest(cas)}

	c.mu.Lock()
	v, ok := c.entries[key]
	c.mu.Unlock()

	if ok && now.Before(v.recheckAt) {
		return v
	}

	v = verify(leaf, cas, now)
	if v.trusted && now.Before(v.recheckAt) {
		c.put(key, v)
	}

	return v
}

func (c *verifications) put(key verificationKey, v verification) {
	c.mu.Lock()
	defer c.mu.Unlock()

	if c.capacity == 0 {
		return
	}

	if _, ok := c.entries[key]; ok {
		c.entries[key] = v

		return
	}

	if len(c.order) < c.capacity {
		c.order = append(c.order, key)
	} else {
		delete(c.entries, c.order[c.next])
		c.order[c.next] = key
		c.next = (c.next + 1) % c.capacity
	}

	c.entries[key] = v
}

// poolDigest identifies the set of CAs, whatever their order.
func poolDigest(cas []*stdx509.Certificate) [sha256.Size]byte {
	sums := make([][sha256.Size]byte, 0, len(cas))
	for _, ca := range cas {
		sums = append(sums, sha256.Sum256(ca.Raw))
	}

	slices.SortFunc(sums, func(a, b [sha256.Size]byte) int { return bytes.Compare(a[:], b[:]) })
	sums = slices.Compact(sums)

	h := sha256.New()
	for _, sum := range sums {
		h.Write(sum[:])
	}

	var out [sha256.Size]byte

	copy(out[:], h.Sum(nil))

	return out
}
