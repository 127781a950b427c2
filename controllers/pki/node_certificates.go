package pki

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/network"
	"github.com/nodepki/nodepki/resources/pki"
)

// NodeCertificatesController issues the node's leaf certificates (pki.NodeCertificate) from the
// roots it holds an issuing key for. api is issued on every node that has the os key; the others
// only on control planes. On a node without the os key another controller obtains api from trustd,
// so the output is shared and this controller only ever touches certificates it created.
//
// A certificate is reissued only when it is missing, when what it was issued for changed (the
// Request digest: profile, SANs and issuing CA) or when its RenewAt has passed; the CA bundle is
// updated in place. Renewal is driven by a timer set to the earliest RenewAt.
type NodeCertificatesController struct {
	// Hostname is the node's hostname, the common name of its server certificates.
	Hostname string
	// Lifetimes overrides the default lifetime of the certificates with these IDs (at least MinLifetime).
	Lifetimes map[resource.ID]time.Duration
	// Clock overrides time.Now.
	Clock func() time.Time

	cas map[resource.ID]loadedCA
}

// loadedCA caches a parsed issuing CA, keyed by the PEM it was parsed from.
type loadedCA struct {
	crt, key    string
	ca          *certs.CA
	fingerprint string
}

// Name implements controller.Controller interface.
func (ctrl *NodeCertificatesController) Name() string {
	return "pki.NodeCertificatesController"
}

// Inputs implements controller.Controller interface.
func (ctrl *NodeCertificatesController) Inputs() []controller.Input {
	return []controller.Input{
		safe.Input[*pki.RootSecret](controller.InputWeak),
		safe.Input[*pki.AcceptedCA](controller.InputWeak),
		safe.Input[*pki.CertSAN](controller.InputWeak),
		{
			Namespace: network.NamespaceName,
			Type:      network.NodeAddressesType,
			ID:        optional.Some(network.CurrentID),
			Kind:      controller.InputWeak,
		},
	}
}

// Outputs implements controller.Controller interface.
func (ctrl *NodeCertificatesController) Outputs() []controller.Output {
	return []controller.Output{{Type: pki.NodeCertificatesType, Kind: controller.OutputShared}}
}

// Run implements controller.Controller interface.
func (ctrl *NodeCertificatesController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	renewal := time.NewTimer(time.Hour)
	renewal.Stop()

	defer renewal.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-renewal.C:
		}

		next, err := ctrl.reconcile(ctx, r, logger)
		if err != nil {
			return err
		}

		renewal.Stop()

		if !next.IsZero() {
			renewal.Reset(max(next.Sub(ctrl.now()), 0))
		}

		r.ResetRestartBackoff()
	}
}

func (ctrl *NodeCertificatesController) now() time.Time {
	if ctrl.Clock != nil {
		return ctrl.Clock()
	}

	return time.Now()
}

// reconcile brings the certificates in line with the inputs and returns the earliest RenewAt.
func (ctrl *NodeCertificatesController) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger) (time.Time, error) {
	in, err := ctrl.readInputs(ctx, r)
	if err != nil {
		return time.Time{}, err
	}

	now := ctrl.now()
	desired := map[resource.ID]struct{}{}

	var works []*leafWork

	for _, leaf := range planLeaves(in.controlPlane, in.roots, in.node, ctrl.Lifetimes) {
		desired[leaf.id] = struct{}{}

		accepted, hasPool := in.accepted[leaf.root]
		if !leaf.ready || !hasPool {
			// Keep what exists and wait for the missing input, whose arrival wakes the controller;
			// arming the timer for a certificate that cannot be renewed yet would only spin.
			continue
		}

		current, exists := in.existing[leaf.id]

		if work := ctrl.prepare(leaf, in.roots[leaf.root], accepted, current, exists, now); work != nil {
			works = append(works, work)
		}
	}

	// Key generation and signing dominate a pass that issues; certificates are independent, so
	// they are issued concurrently.
	var wg sync.WaitGroup

	for _, work := range works {
		if work.due {
			wg.Go(func() { work.issue(now) })
		}
	}

	wg.Wait()

	var (
		next time.Time
		errs []error
	)

	for _, work := range works {
		if work.err != nil {
			errs = append(errs, fmt.Errorf("certificate %q: %w", work.leaf.id, work.err))
		}

		if err = safe.WriterModify(ctx, r, pki.NewNodeCertificate(work.leaf.id), func(res *pki.NodeCertificate) error {
			*res.TypedSpec() = work.spec

			return nil
		}); err != nil {
			return time.Time{}, fmt.Errorf("error updating certificate %q: %w", work.leaf.id, err)
		}

		if work.issued != nil {
			logger.Info("issued certificate",
				zap.String("id", work.leaf.id),
				zap.String("root", work.leaf.root),
				zap.String("serial", work.issued.serial),
				zap.String("issuer_fingerprint", work.spec.IssuerFingerprint),
				zap.Time("not_after", work.issued.notAfter),
			)
		}

		next = earliest(next, renewAtOf(work.spec))
	}

	for id := range in.existing {
		if _, ok := desired[id]; ok {
			continue
		}

		if err = r.Destroy(ctx, pki.NewNodeCertificate(id).Metadata()); err != nil && !state.IsNotFoundError(err) {
			return time.Time{}, fmt.Errorf("error removing certificate %q: %w", id, err)
		}

		logger.Info("removed certificate", zap.String("id", id))
	}

	if len(errs) > 0 {
		return time.Time{}, errors.Join(errs...)
	}

	return next, nil
}

type nodeCertificatesInputs struct {
	controlPlane bool
	roots        map[resource.ID]pki.RootSecretSpec
	accepted     map[resource.ID]pki.AcceptedCASpec
	node         nodeIdentity
	// existing are the certificates this controller owns.
	existing map[resource.ID]pki.NodeCertificateSpec
}

func (ctrl *NodeCertificatesController) readInputs(ctx context.Context, r controller.Runtime) (nodeCertificatesInputs, error) {
	in := nodeCertificatesInputs{
		roots:    map[resource.ID]pki.RootSecretSpec{},
		accepted: map[resource.ID]pki.AcceptedCASpec{},
		node:     nodeIdentity{hostname: ctrl.Hostname, sans: map[resource.ID]pki.CertSANSpec{}},
		existing: map[resource.ID]pki.NodeCertificateSpec{},
	}

	roots, err := safe.ReaderListAll[*pki.RootSecret](ctx, r)
	if err != nil {
		return in, fmt.Errorf("error listing root secrets: %w", err)
	}

	for root := range roots.All() {
		in.roots[root.Metadata().ID()] = *root.TypedSpec()
	}

	// Root secrets carry keys only on control planes, so holding the os key is what makes this node
	// a control plane here. Reading the machine config instead would wake this controller on every
	// config change, before the roots it depends on have followed.
	in.controlPlane = in.roots[pki.RootOS].IssuingKey != ""

	accepted, err := safe.ReaderListAll[*pki.AcceptedCA](ctx, r)
	if err != nil {
		return in, fmt.Errorf("error listing accepted CAs: %w", err)
	}

	for pool := range accepted.All() {
		in.accepted[pool.Metadata().ID()] = *pool.TypedSpec()
	}

	sans, err := safe.ReaderListAll[*pki.CertSAN](ctx, r)
	if err != nil {
		return in, fmt.Errorf("error listing cert SANs: %w", err)
	}

	for san := range sans.All() {
		in.node.sans[san.Metadata().ID()] = *san.TypedSpec()
	}

	addresses, err := safe.ReaderGetByID[*network.NodeAddresses](ctx, r, network.CurrentID)
	if err != nil && !state.IsNotFoundError(err) {
		return in, fmt.Errorf("error reading node addresses: %w", err)
	}

	if err == nil {
		in.node.addresses = addresses.TypedSpec().Addresses
	}

	existing, err := safe.ReaderListAll[*pki.NodeCertificate](ctx, r)
	if err != nil {
		return in, fmt.Errorf("error listing node certificates: %w", err)
	}

	for crt := range existing.All() {
		if crt.Metadata().Owner() == ctrl.Name() {
			in.existing[crt.Metadata().ID()] = *crt.TypedSpec()
		}
	}

	return in, nil
}

// leafWork is one certificate in a pass: the spec it ends up with and, if it is due, how it gets there.
type leafWork struct {
	leaf    plannedLeaf
	ca      loadedCA
	request string
	// spec starts as the current spec with the CA bundle refreshed.
	spec pki.NodeCertificateSpec
	due  bool
	// issued is set once a new certificate was issued; err when loading the CA or issuing failed.
	issued *issuedCertificate
	err    error
}

// issuedCertificate is what the "issued certificate" log line reports.
type issuedCertificate struct {
	serial   string
	notAfter time.Time
}

// prepare decides whether a certificate must be (re)issued: when it is missing, when it was
// issued for something else (profile, SANs or issuing CA) or when it is due for renewal.
// A CA that does not load leaves the current certificate in place, with the error.
//
// It returns nil while the root's trust pool does not have the issuing CA yet (the two follow the
// config separately): a certificate is only published with a bundle that trusts its issuer.
func (ctrl *NodeCertificatesController) prepare(
	leaf plannedLeaf, root pki.RootSecretSpec, accepted pki.AcceptedCASpec,
	current pki.NodeCertificateSpec, exists bool, now time.Time,
) *leafWork {
	work := &leafWork{leaf: leaf, spec: current}
	work.spec.Root = leaf.root
	work.spec.CABundle = strings.Join(accepted.Certificates, "")

	ca, err := ctrl.loadCA(leaf.root, root)
	if err != nil {
		work.err = err
		work.spec.LastError = err.Error()

		return work
	}

	if accepted.IssuingFingerprint != ca.fingerprint {
		return nil
	}

	work.ca = ca
	work.request = requestDigest(leaf.profile, ca.fingerprint)
	work.due = !exists || current.Request != work.request || current.LastError != "" || due(current, now)

	return work
}

// issue issues the certificate; it only touches work, so works can be issued concurrently.
func (work *leafWork) issue(now time.Time) {
	crtPEM, keyPEM, err := work.ca.ca.Issue(work.leaf.profile, issuanceTime(now))
	if err != nil {
		work.err = err
		work.spec.LastError = fmt.Sprintf("error issuing certificate: %v", err)

		return
	}

	crt, err := certs.ParseCertificate(crtPEM)
	if err != nil {
		work.err = fmt.Errorf("error parsing issued certificate: %w", err)

		return
	}

	work.spec = pki.NodeCertificateSpec{
		Root:              work.leaf.root,
		Certificate:       string(crtPEM),
		Key:               string(keyPEM),
		CABundle:          work.spec.CABundle,
		IssuerFingerprint: work.ca.fingerprint,
		Request:           work.request,
		RenewAt:           formatTime(renewalTime(crt)),
	}
	work.issued = &issuedCertificate{serial: crt.SerialNumber.Text(16), notAfter: crt.NotAfter}
}

func (ctrl *NodeCertificatesController) loadCA(id resource.ID, root pki.RootSecretSpec) (loadedCA, error) {
	if cached, ok := ctrl.cas[id]; ok && cached.crt == root.IssuingCert && cached.key == root.IssuingKey {
		return cached, nil
	}

	ca, err := certs.LoadCA([]byte(root.IssuingCert), []byte(root.IssuingKey))
	if err != nil {
		return loadedCA{}, fmt.Errorf("error loading the %s issuing CA: %w", id, err)
	}

	if ctrl.cas == nil {
		ctrl.cas = map[resource.ID]loadedCA{}
	}

	loaded := loadedCA{crt: root.IssuingCert, key: root.IssuingKey, ca: ca, fingerprint: certs.Fingerprint(ca.Crt)}
	ctrl.cas[id] = loaded

	return loaded, nil
}

// due reports whether the certificate must be renewed: its RenewAt passed, or it cannot be read.
func due(spec pki.NodeCertificateSpec, now time.Time) bool {
	renewAt, err := time.Parse(time.RFC3339, spec.RenewAt)
	if err != nil || spec.Certificate == "" || spec.Key == "" {
		return true
	}

	return !now.Before(renewAt)
}

// renewAtOf is the RenewAt of a certificate, or the zero time if it has none.
func renewAtOf(spec pki.NodeCertificateSpec) time.Time {
	if spec.Certificate == "" {
		return time.Time{}
	}

	renewAt, err := time.Parse(time.RFC3339, spec.RenewAt)
	if err != nil {
		return time.Time{}
	}

	return renewAt
}

// earliest is the earlier of two times, ignoring zero ones.
func earliest(a, b time.Time) time.Time {
	switch {
	case a.IsZero():
		return b
	case b.IsZero() || a.Before(b):
		return a
	default:
		return b
	}
}
