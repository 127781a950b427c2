package pki

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
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
//
// A certificate is only published once the root's trust pool has its issuing CA, so that its
// bundle trusts its issuer. The root and the pool follow the config separately; when the issuing
// CA changes, the certificates are issued as soon as the root has the new CA and kept back until
// the pool has it too, so that the issuance does not wait for the pool.
type NodeCertificatesController struct {
	// Hostname is the node's hostname, the common name of its server certificates.
	Hostname string
	// Lifetimes overrides the default lifetime of the certificates with these IDs (at least MinLifetime).
	Lifetimes map[resource.ID]time.Duration
	// Clock overrides time.Now.
	Clock func() time.Time

	cas map[resource.ID]*issuingCA
	// heldBack are certificates issued ahead of the trust pool, by ID.
	heldBack map[resource.ID]*leafWork
	requests map[resource.ID]requestMemo
}

// issuingCA is the issuing CA of a root, loaded from the PEM it keeps: the certificate as soon as
// the root changes, since every certificate of the root depends on its fingerprint, and the key in
// the background. Parsing a key derives its public key, which costs about as much as a signature,
// and a rotation step changes every root at once: issuance waits for the key of its own root only.
type issuingCA struct {
	crt, key    string
	fingerprint string
	// err is why the certificate is unusable; nothing is loaded then.
	err error
	// loaded is closed once ca or keyErr is set.
	loaded chan struct{}
	ca     *certs.CA
	keyErr error
}

func loadIssuingCA(id resource.ID, root pki.RootSecretSpec) *issuingCA {
	ca := &issuingCA{crt: root.IssuingCert, key: root.IssuingKey, loaded: make(chan struct{})}

	crt, err := certs.ParseCertificate([]byte(ca.crt))
	if err != nil {
		ca.err = fmt.Errorf("error loading the %s issuing CA: crt: %w", id, err)
		close(ca.loaded)

		return ca
	}

	ca.fingerprint = certs.Fingerprint(crt)

	go func() {
		defer close(ca.loaded)

		if ca.ca, ca.keyErr = certs.LoadCA([]byte(ca.crt), []byte(ca.key)); ca.keyErr != nil {
			ca.keyErr = fmt.Errorf("error loading the %s issuing CA: %w", id, ca.keyErr)
		}
	}()

	return ca
}

// wait returns the loaded CA, or why it does not load.
func (ca *issuingCA) wait() (*certs.CA, error) {
	<-ca.loaded

	if ca.err != nil {
		return nil, ca.err
	}

	return ca.ca, ca.keyErr
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

	leaves := planLeaves(in.controlPlane, in.roots, in.node, ctrl.Lifetimes)
	issuingRoots := map[resource.ID]struct{}{}

	for _, leaf := range leaves {
		if leaf.ready {
			issuingRoots[leaf.root] = struct{}{}
		}
	}

	ctrl.loadCAs(in.roots, issuingRoots)

	for _, leaf := range leaves {
		desired[leaf.id] = struct{}{}

		if !leaf.ready {
			// Keep what exists and wait for the missing input, whose arrival wakes the controller;
			// arming the timer for a certificate that cannot be renewed yet would only spin.
			continue
		}

		var current pki.NodeCertificateSpec

		res, exists := in.existing[leaf.id]
		if exists {
			current = *res.TypedSpec()
		}

		pool, hasPool := in.accepted[leaf.root]

		if work := ctrl.prepare(leaf, pool, hasPool, current, exists, now); work != nil {
			works = append(works, work)
		}
	}

	for id := range ctrl.heldBack {
		if _, ok := desired[id]; !ok {
			delete(ctrl.heldBack, id)
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

	// A key that does not load is reported even when nothing needed issuing.
	for _, work := range works {
		if work.err == nil && work.ca != nil {
			if _, err = work.ca.wait(); err != nil {
				work.fail(err)
			}
		}
	}

	if err = ctrl.catchUp(ctx, r, works); err != nil {
		return time.Time{}, err
	}

	var (
		next time.Time
		errs []error
	)

	for _, work := range works {
		if !work.publish {
			ctrl.holdBack(work)

			continue
		}

		delete(ctrl.heldBack, work.leaf.id)

		if work.err != nil {
			errs = append(errs, fmt.Errorf("certificate %q: %w", work.leaf.id, work.err))
		}

		if current, ok := in.existing[work.leaf.id]; !ok || *current.TypedSpec() != work.spec {
			if _, err = writeSpec(ctx, r, current, pki.NewNodeCertificate(work.leaf.id), work.spec); err != nil {
				return time.Time{}, fmt.Errorf("error updating certificate %q: %w", work.leaf.id, err)
			}
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
	accepted     map[resource.ID]acceptedPool
	node         nodeIdentity
	// existing are the certificates this controller owns, as read.
	existing map[resource.ID]*pki.NodeCertificate
}

func (ctrl *NodeCertificatesController) readInputs(ctx context.Context, r controller.Runtime) (nodeCertificatesInputs, error) {
	in := nodeCertificatesInputs{
		roots:    map[resource.ID]pki.RootSecretSpec{},
		node:     nodeIdentity{hostname: ctrl.Hostname, sans: map[resource.ID]pki.CertSANSpec{}},
		existing: map[resource.ID]*pki.NodeCertificate{},
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

	if in.accepted, err = readAcceptedCAs(ctx, r); err != nil {
		return in, err
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
			in.existing[crt.Metadata().ID()] = crt
		}
	}

	return in, nil
}

// acceptedPool is what the certificates of a root take from its trust pool.
type acceptedPool struct {
	issuingFingerprint string
	// bundle is the CA bundle of the root's certificates: every accepted CA.
	bundle string
}

func readAcceptedCAs(ctx context.Context, r controller.Reader) (map[resource.ID]acceptedPool, error) {
	list, err := safe.ReaderListAll[*pki.AcceptedCA](ctx, r)
	if err != nil {
		return nil, fmt.Errorf("error listing accepted CAs: %w", err)
	}

	accepted := make(map[resource.ID]acceptedPool, list.Len())

	for pool := range list.All() {
		spec := pool.TypedSpec()
		accepted[pool.Metadata().ID()] = acceptedPool{issuingFingerprint: spec.IssuingFingerprint, bundle: strings.Join(spec.Certificates, "")}
	}

	return accepted, nil
}

// requestDigest is requestDigest of the certificate's profile, remembered per certificate:
// profiles are rebuilt on every pass and rarely change, and comparing one costs less than hashing it.
func (ctrl *NodeCertificatesController) requestDigest(leaf plannedLeaf, issuerFingerprint string) string {
	if memo, ok := ctrl.requests[leaf.id]; ok && memo.issuerFingerprint == issuerFingerprint && reflect.DeepEqual(memo.profile, leaf.profile) {
		return memo.digest
	}

	digest := requestDigest(leaf.profile, issuerFingerprint)

	if ctrl.requests == nil {
		ctrl.requests = map[resource.ID]requestMemo{}
	}

	ctrl.requests[leaf.id] = requestMemo{profile: leaf.profile, issuerFingerprint: issuerFingerprint, digest: digest}

	return digest
}

type requestMemo struct {
	profile                   certs.Profile
	issuerFingerprint, digest string
}

// catchUp publishes the certificates a pass issued ahead of their trust pool if the pool has
// caught up meanwhile, as it usually has: it follows the same config change, and issuing takes
// longer than building it. This saves a pass between issuance and publication.
func (ctrl *NodeCertificatesController) catchUp(ctx context.Context, r controller.Reader, works []*leafWork) error {
	if !slices.ContainsFunc(works, func(work *leafWork) bool { return !work.publish && work.issued != nil }) {
		return nil
	}

	accepted, err := readAcceptedCAs(ctx, r)
	if err != nil {
		return err
	}

	for _, work := range works {
		if pool, ok := accepted[work.leaf.root]; ok && !work.publish && work.issued != nil && pool.issuingFingerprint == work.ca.fingerprint {
			work.publish = true
			work.spec.CABundle = pool.bundle
		}
	}

	return nil
}

// leafWork is one certificate in a pass: the spec it ends up with and, if it is due, how it gets there.
type leafWork struct {
	leaf    plannedLeaf
	ca      *issuingCA
	request string
	// spec starts as the current spec with the CA bundle refreshed.
	spec pki.NodeCertificateSpec
	// publish is false while the root's trust pool does not have the issuing CA: the certificate
	// is issued but held back.
	publish bool
	due     bool
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
// issued for something else (profile, SANs or issuing CA) or when it is due for renewal. A
// certificate held back for the same request is used instead of issuing another one.
// A CA that does not load leaves the current certificate in place, with the error.
//
// While the root's trust pool does not have the issuing CA yet (the two follow the config
// separately), a certificate that is due is issued and held back, and nothing is written: a
// certificate is only published with a bundle that trusts its issuer. prepare returns nil when
// there is nothing to do.
func (ctrl *NodeCertificatesController) prepare(
	leaf plannedLeaf, pool acceptedPool, hasPool bool,
	current pki.NodeCertificateSpec, exists bool, now time.Time,
) *leafWork {
	work := &leafWork{leaf: leaf, spec: current, publish: hasPool}
	work.spec.Root = leaf.root
	work.spec.CABundle = pool.bundle

	ca := ctrl.cas[leaf.root]
	if ca.err != nil {
		if !hasPool {
			return nil
		}

		work.fail(ca.err)

		return work
	}

	work.ca = ca
	work.publish = hasPool && pool.issuingFingerprint == ca.fingerprint
	// A certificate of another issuer was issued for another request; when the issuer changes,
	// the digest is left to the issuance, which runs concurrently.
	work.due = !exists || current.LastError != "" || current.IssuerFingerprint != ca.fingerprint || due(current, now)

	held := ctrl.heldBack[leaf.id]
	if !work.due || held != nil {
		work.request = ctrl.requestDigest(leaf, ca.fingerprint)
		work.due = work.due || current.Request != work.request
	}

	switch {
	case held == nil:
	case !work.due || held.request != work.request || due(held.spec, now):
		delete(ctrl.heldBack, leaf.id)
	default:
		work.spec = held.spec
		work.spec.CABundle = pool.bundle
		work.issued = held.issued
		work.due = false
	}

	if !work.publish && !work.due {
		return nil
	}

	return work
}

// holdBack keeps a certificate issued ahead of its trust pool; a failed issuance is retried when
// the certificate can be published, and reported then.
func (ctrl *NodeCertificatesController) holdBack(work *leafWork) {
	if work.issued == nil {
		return
	}

	if ctrl.heldBack == nil {
		ctrl.heldBack = map[resource.ID]*leafWork{}
	}

	ctrl.heldBack[work.leaf.id] = work
}

// fail records why the certificate cannot be issued; the current one stays.
func (work *leafWork) fail(err error) {
	work.err = err
	work.spec.LastError = err.Error()
}

// issue issues the certificate; it only touches work, so works can be issued concurrently.
func (work *leafWork) issue(now time.Time) {
	ca, err := work.ca.wait()
	if err != nil {
		work.fail(err)

		return
	}

	if work.request == "" {
		work.request = requestDigest(work.leaf.profile, work.ca.fingerprint)
	}

	issued, err := ca.IssueParsed(work.leaf.profile, issuanceTime(now))
	if err != nil {
		work.err = err
		work.spec.LastError = fmt.Sprintf("error issuing certificate: %v", err)

		return
	}

	crtPEM := string(issued.CrtPEM)
	rememberLeaf(crtPEM, issued.Crt, ca.Crt)

	work.spec = pki.NodeCertificateSpec{
		Root:              work.leaf.root,
		Certificate:       crtPEM,
		Key:               string(issued.KeyPEM),
		CABundle:          work.spec.CABundle,
		IssuerFingerprint: work.ca.fingerprint,
		Request:           work.request,
		RenewAt:           formatTime(renewalTime(issued.Crt)),
	}
	work.issued = &issuedCertificate{serial: issued.Crt.SerialNumber.Text(16), notAfter: issued.Crt.NotAfter}
}

// loadCAs starts loading the issuing CAs of the roots whose material changed since the last pass.
func (ctrl *NodeCertificatesController) loadCAs(roots map[resource.ID]pki.RootSecretSpec, ids map[resource.ID]struct{}) {
	if ctrl.cas == nil {
		ctrl.cas = map[resource.ID]*issuingCA{}
	}

	for id := range ids {
		root := roots[id]
		if cached, ok := ctrl.cas[id]; ok && cached.crt == root.IssuingCert && cached.key == root.IssuingKey {
			continue
		}

		ctrl.cas[id] = loadIssuingCA(id, root)
	}
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
