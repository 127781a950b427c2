package pki

import (
	"context"
	stdx509 "crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// AcceptedCAsController produces one pki.AcceptedCA per root: the configured accepted CAs, then the
// issuing CA last, deduplicated by SPKI fingerprint. For the service-account root it lists the
// accepted public keys, then the signing key's public key last.
type AcceptedCAsController = DerivedController[pki.AcceptedCASpec, pki.AcceptedCAExtension]

// NewAcceptedCAsController creates an AcceptedCAsController.
func NewAcceptedCAsController() *AcceptedCAsController {
	parser := &poolParser{}

	return newDerivedController[pki.AcceptedCASpec, pki.AcceptedCAExtension]("pki.AcceptedCAsController",
		[]controller.Input{configview.Input()},
		func(ctx context.Context, r controller.Reader, _ *zap.Logger) (map[resource.ID]pki.AcceptedCASpec, bool, error) {
			doc, err := configview.Read(ctx, r)
			if err != nil {
				return nil, false, err
			}

			pools, err := acceptedCAs(doc, parser)
			if err != nil {
				return nil, false, fmt.Errorf("error building accepted CAs: %w", err)
			}

			return pools, true, nil
		})
}

// acceptedCAs maps the machine config to the trust pool of every root it defines; empty pools are left out.
func acceptedCAs(doc *machineconfig.Document, parser *poolParser) (map[resource.ID]pki.AcceptedCASpec, error) {
	pools, err := trustPools(doc, parser)
	if err != nil {
		return nil, err
	}

	out := make(map[resource.ID]pki.AcceptedCASpec, len(pools))
	for id, p := range pools {
		out[id] = p.spec()
	}

	return out, nil
}

// trustPools maps the machine config to the trust pool of every root it defines; empty pools are
// left out.
func trustPools(doc *machineconfig.Document, parser *poolParser) (map[resource.ID]*trustPool, error) {
	defer parser.endRound()

	out := map[resource.ID]*trustPool{}

	if doc == nil {
		return out, nil
	}

	machine := doc.Machine
	if machine == nil {
		machine = &machineconfig.MachineSection{}
	}

	cluster := doc.Cluster
	if cluster == nil {
		cluster = &machineconfig.ClusterSection{}
	}

	etcd := cluster.Etcd
	if etcd == nil {
		etcd = &machineconfig.Etcd{}
	}

	roots := []struct {
		id           resource.ID
		field        string
		accepted     []*machineconfig.Certificate
		issuingField string
		issuing      *machineconfig.CertificateAndKey
	}{
		{pki.RootOS, "machine.acceptedCAs", machine.AcceptedCAs, "machine.ca", machine.CA},
		{pki.RootKubernetes, "cluster.acceptedCAs", cluster.AcceptedCAs, "cluster.ca", cluster.CA},
		{pki.RootEtcd, "cluster.etcd.acceptedCAs", etcd.AcceptedCAs, "cluster.etcd.ca", etcd.CA},
		{pki.RootAggregator, "cluster.acceptedAggregatorCAs", cluster.AcceptedAggregatorCAs, "cluster.aggregatorCA", cluster.AggregatorCA},
	}

	for _, root := range roots {
		p, err := parser.certificatePool(root.field, root.accepted, root.issuingField, root.issuing)
		if err != nil {
			return nil, err
		}

		if len(p.entries) > 0 {
			out[root.id] = p
		}
	}

	p, err := parser.publicKeyPool(cluster.AcceptedServiceAccountKeys, cluster.ServiceAccount)
	if err != nil {
		return nil, err
	}

	if len(p.entries) > 0 {
		out[pki.RootServiceAccount] = p
	}

	return out, nil
}

// trustPool is one root's pool as the config defines it: its entries in order, each key once (by
// SPKI fingerprint), the issuing one last. Its AcceptedCA is spec(); CAStatusesController reads
// the parsed certificates of the entries instead.
type trustPool struct {
	entries            []pemEntry
	issuingFingerprint string
}

func (p *trustPool) add(entry pemEntry) {
	if !slices.ContainsFunc(p.entries, entry.sameKey) {
		p.entries = append(p.entries, entry)
	}
}

// addLast adds the issuing entry, moving an earlier copy of it to the end.
func (p *trustPool) addLast(entry pemEntry) {
	p.entries = slices.DeleteFunc(p.entries, entry.sameKey)
	p.add(entry)
	p.issuingFingerprint = entry.fingerprint
}

// spec is the AcceptedCA of the pool: canonical PEM certificates, or public keys for the
// service-account root.
func (p *trustPool) spec() pki.AcceptedCASpec {
	spec := pki.AcceptedCASpec{IssuingFingerprint: p.issuingFingerprint}

	for _, e := range p.entries {
		if e.crt != nil {
			spec.Certificates = append(spec.Certificates, e.pem)
		} else {
			spec.PublicKeys = append(spec.PublicKeys, e.pem)
		}

		spec.Fingerprints = append(spec.Fingerprints, e.fingerprint)
	}

	return withShortFingerprints(spec)
}

// poolParser parses the CAs and keys of the config's trust pools for one controller, reusing what
// it parsed for the previous config (see parseMemo), so that a config change parses only the CAs
// and keys it adds.
type poolParser struct {
	// certificates is keyed by the PEM of an accepted or issuing entry, so that a CA that moves
	// from one to the other in a rotation step is not parsed again.
	certificates parseMemo[[]byte, []pemEntry]
	keys         parseMemo[[]byte, pemEntry]
}

func (pp *poolParser) endRound() {
	pp.certificates.endRound()
	pp.keys.endRound()
}

// issuingCertificate parses the first certificate of an issuing CA's PEM, as certs.ParseCertificate
// does: when the whole PEM is a bundle of certificates, its first one (remembered); otherwise
// directly, so that what follows the first block is ignored as before.
func (pp *poolParser) issuingCertificate(data []byte) (pemEntry, error) {
	if entries, err := pp.certificates.parse(data, parseCertificateEntries); err == nil {
		return entries[0], nil
	}

	crt, err := certs.ParseCertificate(data)
	if err != nil {
		return pemEntry{}, err
	}

	return certificateEntry(crt), nil
}

func parseCertificateEntries(data []byte) ([]pemEntry, error) {
	crts, err := certs.ParseCertificates(data)
	if err != nil {
		return nil, err
	}

	entries := make([]pemEntry, 0, len(crts))
	for _, crt := range crts {
		entries = append(entries, certificateEntry(crt))
	}

	return entries, nil
}

func (pp *poolParser) certificatePool(field string, accepted []*machineconfig.Certificate, issuingField string, issuing *machineconfig.CertificateAndKey) (*trustPool, error) {
	p := &trustPool{}

	for i, entry := range accepted {
		if entry == nil {
			continue
		}

		entries, err := pp.certificates.parse(entry.Crt, parseCertificateEntries)
		if err != nil {
			return nil, fmt.Errorf("%s[%d].crt: %w", field, i, err)
		}

		for _, e := range entries {
			p.add(e)
		}
	}

	if issuing != nil && len(issuing.Crt) > 0 {
		e, err := pp.issuingCertificate(issuing.Crt)
		if err != nil {
			return nil, fmt.Errorf("%s.crt: %w", issuingField, err)
		}

		p.addLast(e)
	}

	return p, nil
}

func (pp *poolParser) publicKeyPool(accepted []*machineconfig.Key, signing *machineconfig.Key) (*trustPool, error) {
	p := &trustPool{}

	for i, entry := range accepted {
		if entry == nil {
			continue
		}

		key, err := pp.keys.parse(entry.Key, parsePublicKey)
		if err != nil {
			return nil, fmt.Errorf("cluster.acceptedServiceAccountKeys[%d].key: %w", i, err)
		}

		p.add(key)
	}

	if signing != nil && len(signing.Key) > 0 {
		key, err := pp.keys.parse(signing.Key, parsePublicKey)
		if err != nil {
			return nil, fmt.Errorf("cluster.serviceAccount.key: %w", err)
		}

		p.addLast(key)
	}

	return p, nil
}

// withShortFingerprints fills in the short fingerprints of a pool from its fingerprints.
func withShortFingerprints(spec pki.AcceptedCASpec) pki.AcceptedCASpec {
	spec.ShortFingerprints = make([]string, 0, len(spec.Fingerprints))
	for _, fp := range spec.Fingerprints {
		spec.ShortFingerprints = append(spec.ShortFingerprints, pki.ShortFingerprint(fp))
	}

	spec.IssuingShortFingerprint = pki.ShortFingerprint(spec.IssuingFingerprint)

	return spec
}

// pemEntry is one entry of a pool and its SPKI fingerprint: a CA certificate, or the PKIX PEM of
// a public key.
type pemEntry struct {
	fingerprint string
	crt         *stdx509.Certificate
	// pem is the canonical PEM of the certificate (dropping whatever surrounded it in the config:
	// comments, explanatory text) or of the PKIX public key.
	pem string
}

// sameKey reports whether two entries have the same SPKI fingerprint: a pool holds each key once.
func (e pemEntry) sameKey(other pemEntry) bool {
	return e.fingerprint == other.fingerprint
}

func certificateEntry(crt *stdx509.Certificate) pemEntry {
	return pemEntry{fingerprint: certs.Fingerprint(crt), crt: crt, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: crt.Raw}))}
}

// parsePublicKey normalises a PEM public or private key to its PKIX PEM public key, so that both
// forms of the same key compare equal.
func parsePublicKey(data []byte) (pemEntry, error) {
	pub, err := certs.ParsePublicKey(data)
	if err != nil {
		return pemEntry{}, err
	}

	der, err := stdx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return pemEntry{}, fmt.Errorf("error encoding public key: %w", err)
	}

	return pemEntry{fingerprint: certs.SPKIFingerprint(der), pem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}, nil
}
