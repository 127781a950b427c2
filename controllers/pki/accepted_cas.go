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
	return newDerivedController[pki.AcceptedCASpec, pki.AcceptedCAExtension]("pki.AcceptedCAsController",
		[]controller.Input{configview.Input()},
		func(ctx context.Context, r controller.Reader, _ *zap.Logger) (map[resource.ID]pki.AcceptedCASpec, bool, error) {
			doc, err := configview.Read(ctx, r)
			if err != nil {
				return nil, false, err
			}

			pools, err := acceptedCAs(doc)
			if err != nil {
				return nil, false, fmt.Errorf("error building accepted CAs: %w", err)
			}

			return pools, true, nil
		})
}

// acceptedCAs maps the machine config to the trust pool of every root it defines; empty pools are left out.
func acceptedCAs(doc *machineconfig.Document) (map[resource.ID]pki.AcceptedCASpec, error) {
	pools, err := trustPools(doc)
	if err != nil {
		return nil, err
	}

	out := make(map[resource.ID]pki.AcceptedCASpec, len(pools))
	for id, p := range pools {
		out[id] = p.spec
	}

	return out, nil
}

// trustPool is one root's AcceptedCA with its CA certificates as parsed from the config, in the
// order of spec.Certificates (none for the service-account root, whose pool holds keys).
type trustPool struct {
	spec pki.AcceptedCASpec
	cas  []*stdx509.Certificate
}

// trustPools maps the machine config to the trust pool of every root it defines, with the parsed
// CAs; empty pools are left out.
func trustPools(doc *machineconfig.Document) (map[resource.ID]trustPool, error) {
	out := map[resource.ID]trustPool{}

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
		p, err := certificatePool(root.field, root.accepted, root.issuingField, root.issuing)
		if err != nil {
			return nil, err
		}

		if len(p.spec.Certificates) > 0 {
			out[root.id] = p
		}
	}

	spec, err := publicKeyPool(cluster.AcceptedServiceAccountKeys, cluster.ServiceAccount)
	if err != nil {
		return nil, err
	}

	if len(spec.PublicKeys) > 0 {
		out[pki.RootServiceAccount] = trustPool{spec: spec}
	}

	return out, nil
}

// pool collects PEM entries in order, skipping fingerprints already present; the issuing entry is
// added last and moves an earlier copy of itself to the end.
type pool struct {
	entries []pemEntry
}

func (p *pool) add(entry pemEntry) {
	if !slices.ContainsFunc(p.entries, entry.sameKey) {
		p.entries = append(p.entries, entry)
	}
}

func (p *pool) addLast(entry pemEntry) {
	p.entries = slices.DeleteFunc(p.entries, entry.sameKey)
	p.add(entry)
}

// spec is the AcceptedCA of the pool: its entries as certificates or as public keys.
func (p *pool) spec(issuingFingerprint string, publicKeys bool) pki.AcceptedCASpec {
	spec := pki.AcceptedCASpec{IssuingFingerprint: issuingFingerprint}

	for _, e := range p.entries {
		if publicKeys {
			spec.PublicKeys = append(spec.PublicKeys, e.pem)
		} else {
			spec.Certificates = append(spec.Certificates, e.pem)
		}

		spec.Fingerprints = append(spec.Fingerprints, e.fingerprint)
	}

	return withShortFingerprints(spec)
}

func certificatePool(field string, accepted []*machineconfig.Certificate, issuingField string, issuing *machineconfig.CertificateAndKey) (trustPool, error) {
	var p pool

	for i, entry := range accepted {
		if entry == nil {
			continue
		}

		crts, err := parseCertificates(entry.Crt)
		if err != nil {
			return trustPool{}, fmt.Errorf("%s[%d].crt: %w", field, i, err)
		}

		for _, crt := range crts {
			p.add(crt)
		}
	}

	var issuingFingerprint string

	if issuing != nil && len(issuing.Crt) > 0 {
		crts, err := parseCertificate(issuing.Crt)
		if err != nil {
			return trustPool{}, fmt.Errorf("%s.crt: %w", issuingField, err)
		}

		issuingFingerprint = crts[0].fingerprint
		p.addLast(crts[0])
	}

	out := trustPool{spec: p.spec(issuingFingerprint, false)}
	for _, e := range p.entries {
		out.cas = append(out.cas, e.crt)
	}

	return out, nil
}

func publicKeyPool(accepted []*machineconfig.Key, signing *machineconfig.Key) (pki.AcceptedCASpec, error) {
	var p pool

	for i, entry := range accepted {
		if entry == nil {
			continue
		}

		keys, err := parsePublicKey(entry.Key)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("cluster.acceptedServiceAccountKeys[%d].key: %w", i, err)
		}

		p.add(keys[0])
	}

	var issuingFingerprint string

	if signing != nil && len(signing.Key) > 0 {
		keys, err := parsePublicKey(signing.Key)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("cluster.serviceAccount.key: %w", err)
		}

		issuingFingerprint = keys[0].fingerprint
		p.addLast(keys[0])
	}

	return p.spec(issuingFingerprint, true), nil
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

// pemEntry is one canonical PEM block and its SPKI fingerprint; crt is the certificate it encodes
// (nil for a public key).
type pemEntry struct {
	pem, fingerprint string
	crt              *stdx509.Certificate
}

// sameKey reports whether two entries have the same SPKI fingerprint: a pool holds each key once.
func (e pemEntry) sameKey(other pemEntry) bool {
	return e.fingerprint == other.fingerprint
}

func parseCertificates(data []byte) ([]pemEntry, error) {
	crts, err := certs.ParseCertificates(data)
	if err != nil {
		return nil, err
	}

	out := make([]pemEntry, 0, len(crts))
	for _, crt := range crts {
		out = append(out, pemEntry{pem: certificatePEM(crt), fingerprint: certs.Fingerprint(crt), crt: crt})
	}

	return out, nil
}

func parseCertificate(data []byte) ([]pemEntry, error) {
	crt, err := certs.ParseCertificate(data)
	if err != nil {
		return nil, err
	}

	return []pemEntry{{pem: certificatePEM(crt), fingerprint: certs.Fingerprint(crt), crt: crt}}, nil
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
