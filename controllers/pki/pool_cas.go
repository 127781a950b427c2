package pki

import (
	stdx509 "crypto/x509"
	"slices"
	"strings"
	"sync"

	"github.com/cosi-project/runtime/pkg/resource"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// poolCAs holds the parsed CAs of each root's trust pool for one CertificateStatusesController, so
// that a rotation step, which changes the status of every certificate of a root, parses the root's
// pool once rather than once per certificate. One entry per root, keyed by the pool's certificates:
// a changed AcceptedCA replaces the entry, and the parse is the same as without it. The parsed
// certificates are only read (x509 verification does not modify them).
type poolCAs struct {
	mu     sync.Mutex
	byRoot map[resource.ID]parsedPool
}

type parsedPool struct {
	certificates []string
	cas          []*stdx509.Certificate
}

// get returns the CAs of a root's pool, nil without one.
func (c *poolCAs) get(root resource.ID, pool *pki.AcceptedCA) []*stdx509.Certificate {
	if pool == nil {
		return nil
	}

	certificates := pool.TypedSpec().Certificates

	c.mu.Lock()
	defer c.mu.Unlock()

	if e, ok := c.byRoot[root]; ok && slices.Equal(e.certificates, certificates) {
		return e.cas
	}

	// AcceptedCAs only holds certificates that parsed when the pool was built.
	cas, _ := certs.ParseCertificates([]byte(strings.Join(certificates, "")))

	if c.byRoot == nil {
		c.byRoot = map[resource.ID]parsedPool{}
	}

	c.byRoot[root] = parsedPool{certificates: slices.Clone(certificates), cas: cas}

	return cas
}
