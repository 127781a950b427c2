package pki

import (
	"context"
	stdx509 "crypto/x509"
	"encoding/pem"
	"fmt"
	"slices"

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
	config machineConfigCache
}

// Name implements controller.Controller interface.
func (ctrl *AcceptedCAsController) Name() string {
	return "pki.AcceptedCAsController"
}

// Inputs implements controller.Controller interface.
func (ctrl *AcceptedCAsController) Inputs() []controller.Input {
	return []controller.Input{machineConfigInput()}
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

		doc, err := readMachineConfig(ctx, r, &ctrl.config)
		if err != nil {
			return err
		}

		pools, err := acceptedCAs(doc)
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

		crts, err := certs.ParseCertificates(entry.Crt)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("%s[%d].crt: %w", field, i, err)
		}

		for _, crt := range crts {
			p.add(certificatePEM(crt), certs.Fingerprint(crt))
		}
	}

	var issuingFingerprint string

	if issuing != nil && len(issuing.Crt) > 0 {
		crt, err := certs.ParseCertificate(issuing.Crt)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("%s.crt: %w", issuingField, err)
		}

		issuingFingerprint = certs.Fingerprint(crt)
		p.addLast(certificatePEM(crt), issuingFingerprint)
	}

	return pki.AcceptedCASpec{Certificates: p.entries, Fingerprints: p.fingerprints, IssuingFingerprint: issuingFingerprint}, nil
}

func publicKeyPool(accepted []*machineconfig.Key, signing *machineconfig.Key) (pki.AcceptedCASpec, error) {
	var p pool

	for i, entry := range accepted {
		if entry == nil {
			continue
		}

		keyPEM, fingerprint, err := publicKey(entry.Key)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("cluster.acceptedServiceAccountKeys[%d].key: %w", i, err)
		}

		p.add(keyPEM, fingerprint)
	}

	var issuingFingerprint string

	if signing != nil && len(signing.Key) > 0 {
		keyPEM, fingerprint, err := publicKey(signing.Key)
		if err != nil {
			return pki.AcceptedCASpec{}, fmt.Errorf("cluster.serviceAccount.key: %w", err)
		}

		issuingFingerprint = fingerprint
		p.addLast(keyPEM, fingerprint)
	}

	return pki.AcceptedCASpec{PublicKeys: p.entries, Fingerprints: p.fingerprints, IssuingFingerprint: issuingFingerprint}, nil
}

// publicKey normalises a PEM public or private key to its PKIX PEM public key, so that both forms
// of the same key compare equal.
func publicKey(data []byte) (keyPEM, fingerprint string, err error) {
	pub, err := certs.ParsePublicKey(data)
	if err != nil {
		return "", "", err
	}

	der, err := stdx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", "", fmt.Errorf("error encoding public key: %w", err)
	}

	fingerprint, err = certs.PublicKeyFingerprint(pub)
	if err != nil {
		return "", "", err
	}

	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), fingerprint, nil
}

// certificatePEM re-encodes a certificate, dropping whatever surrounded it in the config
// (comments, explanatory text), so the pool is canonical.
func certificatePEM(crt *stdx509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: crt.Raw}))
}
