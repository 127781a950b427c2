package pki

import (
	"context"
	stdx509 "crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"

	"github.com/nodepki/nodepki/controllers/configview"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// AcceptedCAsController produces one pki.AcceptedCA per root: the configured accepted CAs, then the
// issuing CA last, deduplicated by SPKI fingerprint. For the service-account root it lists the
// accepted public keys, then the signing key's public key last.
type AcceptedCAsController struct {
	config configview.Cache
	parsed parsedPEM
}

// Name implements controller.Controller interface.
func (ctrl *AcceptedCAsController) Name() string {
	return "pki.AcceptedCAsController"
}

// Inputs implements controller.Controller interface.
func (ctrl *AcceptedCAsController) Inputs() []controller.Input {
	return []controller.Input{configview.Input()}
}

// Outputs implements controller.Controller interface.
func (ctrl *AcceptedCAsController) Outputs() []controller.Output {
	return []controller.Output{{Type: pki.AcceptedCAsType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller interface.
func (ctrl *AcceptedCAsController) Run(ctx context.Context, r controller.Runtime, _ *zap.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		}

		doc, err := configview.Read(ctx, r, &ctrl.config)
		if err != nil {
			return err
		}

		pools, err := acceptedCAs(doc, &ctrl.parsed)
		ctrl.parsed.endPass()

		if err != nil {
			return fmt.Errorf("error building accepted CAs: %w", err)
		}

		r.StartTrackingOutputs()

		for id, spec := range pools {
			if err = safe.WriterModify(ctx, r, pki.NewAcceptedCA(id), func(res *pki.AcceptedCA) error {
				*res.TypedSpec() = spec

				return nil
			}); err != nil {
				return fmt.Errorf("error updating accepted CAs %q: %w", id, err)
			}
		}

		if err = safe.CleanupOutputs[*pki.AcceptedCA](ctx, r); err != nil {
			return fmt.Errorf("error cleaning up accepted CAs: %w", err)
		}
	}
}

// acceptedCAs maps the machine config to the trust pool of every root it defines; empty pools are left out.
func acceptedCAs(doc *machineconfig.Document, parsed *parsedPEM) (map[resource.ID]pki.AcceptedCASpec, error) {
	out := map[resource.ID]pki.AcceptedCASpec{}

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
		spec, err := certificatePool(parsed, root.field, root.accepted, root.issuingField, root.issuing)
		if err != nil {
			return nil, err
		}

		if len(spec.Certificates) > 0 {
			out[root.id] = spec
		}
	}

	spec, err := publicKeyPool(parsed, cluster.AcceptedServiceAccountKeys, cluster.ServiceAccount)
	if err != nil {
		return nil, err
	}

	if len(spec.PublicKeys) > 0 {
		out[pki.RootServiceAccount] = spec
	}

	return out, nil
}

// pool collects PEM entries in order, skipping fingerprints already present; the issuing entry is
// added last and moves an earlier copy of itself to the end.
type pool struct {
	entries      []string
	fingerprints []string
}

func (p *pool) add(entry, fingerprint string) {
	if !slices.Contains(p.fingerprints, fingerprint) {
		p.entries = append(p.entries, entry)
		p.fingerprints = append(p.fingerprints, fingerprint)
	}
}

func (p *pool) addLast(entry, fingerprint string) {
	if i := slices.Index(p.fingerprints, fingerprint); i >= 0 {
		p.entries = slices.Delete(p.entries, i, i+1)
		p.fingerprints = slices.Delete(p.fingerprints, i, i+1)
	}

	p.add(entry, fingerprint)
}

func certificatePool(parsed *parsedPEM, field string, accepted []*machineconfig.Certificate, issuingField string, issuing *machineconfig.CertificateAndKey) (pki.AcceptedCASpec, error) {
	var p pool

	for i, entry := range accepted {
		if entry == nil {
			continue
		}

		crts, err := parsed.get(certificateBundle, entry.Crt)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("%s[%d].crt: %w", field, i, err)
		}

		for _, crt := range crts {
			p.add(crt.pem, crt.fingerprint)
		}
	}

	var issuingFingerprint string

	if issuing != nil && len(issuing.Crt) > 0 {
		crts, err := parsed.get(singleCertificate, issuing.Crt)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("%s.crt: %w", issuingField, err)
		}

		issuingFingerprint = crts[0].fingerprint
		p.addLast(crts[0].pem, issuingFingerprint)
	}

	return pki.AcceptedCASpec{Certificates: p.entries, Fingerprints: p.fingerprints, IssuingFingerprint: issuingFingerprint}, nil
}

func publicKeyPool(parsed *parsedPEM, accepted []*machineconfig.Key, signing *machineconfig.Key) (pki.AcceptedCASpec, error) {
	var p pool

	for i, entry := range accepted {
		if entry == nil {
			continue
		}

		keys, err := parsed.get(publicKey, entry.Key)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("cluster.acceptedServiceAccountKeys[%d].key: %w", i, err)
		}

		p.add(keys[0].pem, keys[0].fingerprint)
	}

	var issuingFingerprint string

	if signing != nil && len(signing.Key) > 0 {
		keys, err := parsed.get(publicKey, signing.Key)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("cluster.serviceAccount.key: %w", err)
		}

		issuingFingerprint = keys[0].fingerprint
		p.addLast(keys[0].pem, issuingFingerprint)
	}

	return pki.AcceptedCASpec{PublicKeys: p.entries, Fingerprints: p.fingerprints, IssuingFingerprint: issuingFingerprint}, nil
}

// pemEntry is one canonical PEM block and its SPKI fingerprint.
type pemEntry struct {
	pem, fingerprint string
}

// pemKind is how a config entry is parsed.
type pemKind int

const (
	certificateBundle pemKind = iota // one or more certificates (acceptedCAs entries)
	singleCertificate                // exactly the first certificate (issuing CAs)
	publicKey                        // a public or private key, published as its public key

	pemKinds // the number of kinds
)

func (k pemKind) parse(data []byte) ([]pemEntry, error) {
	switch k {
	case certificateBundle:
		return parseCertificates(data)
	case singleCertificate:
		return parseCertificate(data)
	default:
		return parsePublicKey(data)
	}
}

// parsedPEM remembers parsed config entries across passes: most config changes leave the CAs
// alone, and parsing every certificate and key again would dominate the pass. Entries are keyed
// by their text alone, so a CA that moves between the issuing CA and acceptedCAs (as it does at
// every rotation step) is not parsed again. Only the entries of the last pass are kept.
type parsedPEM struct {
	previous, current map[string]*parsedEntry
}

// parsedEntry holds the outcome of parsing one text as each kind asked for so far.
type parsedEntry struct {
	results [pemKinds]*parseResult
}

type parseResult struct {
	entries []pemEntry
	err     error
}

func (c *parsedPEM) get(kind pemKind, data []byte) ([]pemEntry, error) {
	e, ok := c.current[string(data)]
	if !ok {
		if e, ok = c.previous[string(data)]; !ok {
			e = &parsedEntry{}
		}

		if c.current == nil {
			c.current = map[string]*parsedEntry{}
		}

		c.current[string(data)] = e
	}

	return e.as(kind, data)
}

func (e *parsedEntry) as(kind pemKind, data []byte) ([]pemEntry, error) {
	if r := e.results[kind]; r != nil {
		return r.entries, r.err
	}

	r := &parseResult{}

	if bundle := e.results[certificateBundle]; kind == singleCertificate && bundle != nil && bundle.err == nil {
		// Both start with the first PEM block, which parsed as a certificate.
		r.entries = bundle.entries[:1]
	} else {
		r.entries, r.err = kind.parse(data)
	}

	e.results[kind] = r

	return r.entries, r.err
}

// endPass forgets the entries the pass did not use.
func (c *parsedPEM) endPass() {
	c.previous, c.current = c.current, nil
}

func parseCertificates(data []byte) ([]pemEntry, error) {
	crts, err := certs.ParseCertificates(data)
	if err != nil {
		return nil, err
	}

	out := make([]pemEntry, 0, len(crts))
	for _, crt := range crts {
		out = append(out, pemEntry{pem: certificatePEM(crt), fingerprint: certs.Fingerprint(crt)})
	}

	return out, nil
}

func parseCertificate(data []byte) ([]pemEntry, error) {
	crt, err := certs.ParseCertificate(data)
	if err != nil {
		return nil, err
	}

	return []pemEntry{{pem: certificatePEM(crt), fingerprint: certs.Fingerprint(crt)}}, nil
}

// parsePublicKey normalises a PEM public or private key to its PKIX PEM public key, so that both
// forms of the same key compare equal.
func parsePublicKey(data []byte) ([]pemEntry, error) {
	pub, err := certs.ParsePublicKey(data)
	if err != nil {
		return nil, err
	}

	der, err := stdx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("error encoding public key: %w", err)
	}

	return []pemEntry{{pem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), fingerprint: certs.SPKIFingerprint(der)}}, nil
}

// certificatePEM re-encodes a certificate, dropping whatever surrounded it in the config
// (comments, explanatory text), so the pool is canonical.
func certificatePEM(crt *stdx509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: crt.Raw}))
}
