package rotate

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
)

// Credentials are what a node API client trusts and presents: the CA bundle that verifies node
// certificates and a client certificate with its key (all PEM).
type Credentials struct {
	// Name says which credentials these are in messages (current, transitional, final, ...).
	Name string
	CA   []byte
	Crt  []byte
	Key  []byte
}

// Context returns a talosconfig context with these credentials and the endpoints.
func (c Credentials) Context(endpoints []string) *clientconfig.Context {
	return &clientconfig.Context{
		Endpoints: slices.Clone(endpoints),
		CA:        base64.StdEncoding.EncodeToString(c.CA),
		Crt:       base64.StdEncoding.EncodeToString(c.Crt),
		Key:       base64.StdEncoding.EncodeToString(c.Key),
	}
}

// CredentialsFromContext reads the credentials of a talosconfig context.
func CredentialsFromContext(name string, cctx *clientconfig.Context) (Credentials, error) {
	caPEM, err := cctx.CAPEM()
	if err != nil {
		return Credentials{}, err
	}

	crtPEM, err := cctx.CrtPEM()
	if err != nil {
		return Credentials{}, err
	}

	keyPEM, err := cctx.KeyPEM()
	if err != nil {
		return Credentials{}, err
	}

	return Credentials{Name: name, CA: caPEM, Crt: crtPEM, Key: keyPEM}, nil
}

// roles are the roles of the client certificate (its Organization).
func (c Credentials) roles() ([]string, error) {
	crt, err := certs.ParseCertificate(c.Crt)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}

	return crt.Subject.Organization, nil
}

// credentialSet is the credentials of each moment of an os rotation.
type credentialSet struct {
	// current is what the talosconfig held when the command started.
	current Credentials
	// transitional trusts the old and the new CA and presents the client certificate of the new
	// CA: it works against every node once every node accepts the new CA, until the end.
	transitional *Credentials
	// final trusts the new CA only: it works once every node serves a certificate of the new CA.
	final *Credentials
	// oldCA is a client certificate of the old CA (when its key is known), to check that the
	// nodes refuse it once the old CA is retired.
	oldCA *Credentials
}

// operational returns the credentials for the rotation's own calls, best first: the transitional
// ones, which keep working from the accept step on, then the current ones for the time before.
// The transitional ones also trust what the current ones trust, so that a node that does not
// accept them yet says so (unauthenticated) instead of failing the handshake on our side.
func (s credentialSet) operational() []Credentials {
	if s.transitional == nil {
		return []Credentials{s.current}
	}

	t := *s.transitional
	t.CA = mergeBundles(t.CA, s.current.CA)

	return []Credentials{t, s.current}
}

// mergeBundles concatenates PEM CA bundles, leaving out certificates already included; a bundle
// that does not parse is left out.
func mergeBundles(bundles ...[]byte) []byte {
	var (
		out  []byte
		seen = map[string]bool{}
	)

	for _, b := range bundles {
		crts, err := certs.ParseCertificates(b)
		if err != nil {
			continue
		}

		for _, crt := range crts {
			if fp := certs.Fingerprint(crt); !seen[fp] {
				seen[fp] = true
				out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: crt.Raw})...)
			}
		}
	}

	return out
}

// writeTalosconfig sets the credentials of one context of the talosconfig at path, keeping its
// name, endpoints, nodes and every other context. A missing file is created from template. It
// writes (atomically, 0600) only when the content changes, and reports whether it did.
func writeTalosconfig(path, contextName string, template *clientconfig.Context, creds Credentials) (bool, error) {
	before, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading talosconfig %s: %w", path, err)
	}

	cfg, err := clientconfig.Parse(before)
	if err != nil {
		return false, fmt.Errorf("talosconfig %s: %w", path, err)
	}

	cctx := cfg.Contexts[contextName]
	if cctx == nil {
		cctx = &clientconfig.Context{}
		if template != nil {
			cctx.Endpoints = slices.Clone(template.Endpoints)
			cctx.Nodes = slices.Clone(template.Nodes)
		}

		cfg.Contexts[contextName] = cctx
	}

	if cfg.Context == "" {
		cfg.Context = contextName
	}

	fresh := creds.Context(nil)
	cctx.CA, cctx.Crt, cctx.Key = fresh.CA, fresh.Crt, fresh.Key

	after, err := cfg.Bytes()
	if err != nil {
		return false, err
	}

	if bytes.Equal(before, after) {
		return false, nil
	}

	if err = cfg.Save(path); err != nil {
		return false, err
	}

	return true, nil
}

// oldCAClientLifetime bounds the throwaway client certificate of the old CA: it only serves to
// check, within the run, that the nodes refuse it.
const oldCAClientLifetime = time.Hour

// oldCAClient issues a throwaway client certificate from the old OS CA, with the roles given.
func oldCAClient(rp *RootPlan, roles []string, trust []byte, now time.Time) (*Credentials, error) {
	if len(rp.Old.Key) == 0 {
		return nil, nil //nolint:nilnil // without the old key there is nothing to check with
	}

	ca, err := certs.LoadCA(rp.Old.Crt, rp.Old.Key)
	if err != nil {
		return nil, fmt.Errorf("plan roots.os.old: %w", err)
	}

	crt, key, err := ca.Issue(certs.ClientProfile(roles, oldCAClientLifetime), now)
	if err != nil {
		return nil, fmt.Errorf("issuing a client certificate of the old CA: %w", err)
	}

	return &Credentials{Name: "old CA", CA: trust, Crt: crt, Key: key}, nil
}
