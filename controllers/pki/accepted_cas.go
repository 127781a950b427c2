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
		spec, err := certificatePool(root.field, root.accepted, root.issuingField, root.issuing)
		if err != nil {
			return nil, err
		}

		if len(spec.Certificates) > 0 {
			out[root.id] = spec
		}
	}

	spec, err := publicKeyPool(cluster.AcceptedServiceAccountKeys, cluster.ServiceAccount)
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

func certificatePool(field string, accepted []*machineconfig.Certificate, issuingField string, issuing *machineconfig.CertificateAndKey) (pki.AcceptedCASpec, error) {
	var p pool

	for i, entry := range accepted {
		if entry == nil {
			continue
		}

		crts, err := parseCertificates(entry.Crt)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("%s[%d].crt: %w", field, i, err)
		}

		for _, crt := range crts {
			p.add(crt.pem, crt.fingerprint)
		}
	}

	var issuingFingerprint string

	if issuing != nil && len(issuing.Crt) > 0 {
		crts, err := parseCertificate(issuing.Crt)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("%s.crt: %w", issuingField, err)
		}

		issuingFingerprint = crts[0].fingerprint
		p.addLast(crts[0].pem, issuingFingerprint)
	}

	return withShortFingerprints(pki.AcceptedCASpec{Certificates: p.entries, Fingerprints: p.fingerprints, IssuingFingerprint: issuingFingerprint}), nil
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

		p.add(keys[0].pem, keys[0].fingerprint)
	}

	var issuingFingerprint string

	if signing != nil && len(signing.Key) > 0 {
		keys, err := parsePublicKey(signing.Key)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("cluster.serviceAccount.key: %w", err)
		}

		issuingFingerprint = keys[0].fingerprint
		p.addLast(keys[0].pem, issuingFingerprint)
	}

	return withShortFingerprints(pki.AcceptedCASpec{PublicKeys: p.entries, Fingerprints: p.fingerprints, IssuingFingerprint: issuingFingerprint}), nil
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

// pemEntry is one canonical PEM block and its SPKI fingerprint.
type pemEntry struct {
	pem, fingerprint string
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
