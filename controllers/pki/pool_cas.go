package pki

import (
	stdx509 "crypto/x509"
	"slices"
	"sync"

	"github.com/cosi-project/runtime/pkg/resource"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// poolCAs parses the CAs of each root's trust pool for one CertificateStatusesController, so that
// a rotation step, which changes the status of every certificate of a root, parses the root's pool
// once rather than once per certificate, and parses only the CAs the step added (a parseMemo per
// root). The parse is the same as without it; the parsed certificates are only read (x509
// verification does not modify them).
type poolCAs struct {
	mu     sync.Mutex
	byRoot map[resource.ID]*rootPoolCAs
}

type rootPoolCAs struct {
	certificates []string
	cas          []*stdx509.Certificate
	memo         parseMemo[string, *stdx509.Certificate]
}

// get returns the CAs of a root's pool, nil without one.
func (c *poolCAs) get(root resource.ID, pool *pki.AcceptedCA) []*stdx509.Certificate {
	if pool == nil {
		return nil
	}

	certificates := pool.TypedSpec().Certificates

	c.mu.Lock()
	defer c.mu.Unlock()

	e, ok := c.byRoot[root]
	if !ok {
		if c.byRoot == nil {
			c.byRoot = map[resource.ID]*rootPoolCAs{}
		}

		e = &rootPoolCAs{}
		c.byRoot[root] = e
	}

	if e.cas != nil && slices.Equal(e.certificates, certificates) {
		return e.cas
	}

	e.certificates, e.cas = slices.Clone(certificates), make([]*stdx509.Certificate, 0, len(certificates))

	for _, crtPEM := range certificates {
		// AcceptedCAs only holds certificates that parsed when the pool was built.
		if crt, err := e.memo.parse(crtPEM, parseCertificatePEM); err == nil {
			e.cas = append(e.cas, crt)
		}
	}

	e.memo.endRound()

	return e.cas
}

func parseCertificatePEM(crtPEM string) (*stdx509.Certificate, error) {
	return certs.ParseCertificate([]byte(crtPEM))
}
