package pki

import (
	stdx509 "crypto/x509"
	"sync"

	"github.com/cosi-project/runtime/pkg/resource"

	"github.com/nodepki/nodepki/pkg/certs"
)

// issuingCAs holds the parsed issuing CA of each root for one NodeCertificatesController, so that
// a reissue of a root's leaves parses its certificate and loads its key once rather than once per
// leaf. One entry per root, keyed by the RootSecret's certificate and key: a changed RootSecret
// replaces the entry, and the parse and the key check are the same as without it.
type issuingCAs struct {
	mu     sync.Mutex
	byRoot map[resource.ID]*issuingCA
}

// issuingCA is one root's issuing CA as its RootSecret holds it. The key is loaded only when a
// certificate is due, so that a bad key is reported then, as without the entry.
type issuingCA struct {
	crtPEM, keyPEM string

	crt         *stdx509.Certificate
	fingerprint string
	crtErr      error

	once  sync.Once
	ca    *certs.CA
	caErr error
}

// get returns the entry of root for its RootSecret's certificate and key.
func (c *issuingCAs) get(root resource.ID, crtPEM, keyPEM string) *issuingCA {
	c.mu.Lock()
	defer c.mu.Unlock()

	if e, ok := c.byRoot[root]; ok && e.crtPEM == crtPEM && e.keyPEM == keyPEM {
		return e
	}

	e := &issuingCA{crtPEM: crtPEM, keyPEM: keyPEM}

	e.crt, e.crtErr = certs.ParseCertificate([]byte(crtPEM))
	if e.crtErr == nil {
		e.fingerprint = certs.Fingerprint(e.crt)
	}

	if c.byRoot == nil {
		c.byRoot = map[resource.ID]*issuingCA{}
	}

	c.byRoot[root] = e

	return e
}

// load returns the CA with its key, loaded on the first call.
func (e *issuingCA) load() (*certs.CA, error) {
	e.once.Do(func() {
		e.ca, e.caErr = certs.LoadCA([]byte(e.crtPEM), []byte(e.keyPEM))
	})

	return e.ca, e.caErr
}
