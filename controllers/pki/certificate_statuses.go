package pki

import (
	"bytes"
	"context"
	stdx509 "crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"maps"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// CertificateStatusesController reports every pki.NodeCertificate, whoever produced it, as a
// pki.CertificateStatus without key material: subject, SANs, issuer, validity, whether it chains to
// a currently accepted CA of its root, and its state. States change with time, so the controller
// wakes on a timer at the next transition.
type CertificateStatusesController struct {
	// Clock overrides time.Now.
	Clock func() time.Time

	// verified caches parsing and chain verification by certificate PEM: a pass recomputes every
	// status, but only new certificates, or certificates whose signer left the pool, need the
	// cryptography again.
	verified map[string]*verification
	pools    map[resource.ID]*trustPool

	// written is every status as the controller last wrote it, by ID, since Run started; nil until
	// a pass has written them all and removed the others. Most passes change few statuses or
	// none (a pool change that does not change trust), so only changed ones are written.
	written map[resource.ID]*pki.CertificateStatus
}

// verification is the outcome of verifying one certificate against its root's pool.
type verification struct {
	crt *stdx509.Certificate
	// summary holds the fields of a status read from the certificate alone, rendered once.
	summary pki.CertificateStatusSpec
	// expiringAt and defaultRenewAt are the certificate's expiringTime and renewalTime.
	expiringAt, defaultRenewAt time.Time
	// err is why the certificate could not be read at all.
	err               error
	trusted           bool
	issuerFingerprint string
	// signerFingerprint is the pool CA that verified it; while that CA stays in the pool, other
	// pool changes do not change the outcome.
	signerFingerprint string
	// poolKey identifies the pool verified against.
	poolKey string
	// recheckAt is when a CA of the chain expires, which changes the outcome.
	recheckAt time.Time
}

// trustPool is the parsed AcceptedCAs of one root.
type trustPool struct {
	// key identifies the set of CAs (sorted fingerprints): the order does not change trust.
	key          string
	fingerprints []string
	pool         *stdx509.CertPool
	cas          []*stdx509.Certificate
}

// Name implements controller.Controller interface.
func (ctrl *CertificateStatusesController) Name() string {
	return "pki.CertificateStatusesController"
}

// Inputs implements controller.Controller interface.
func (ctrl *CertificateStatusesController) Inputs() []controller.Input {
	return []controller.Input{
		safe.Input[*pki.NodeCertificate](controller.InputWeak),
		safe.Input[*pki.AcceptedCA](controller.InputWeak),
	}
}

// Outputs implements controller.Controller interface.
func (ctrl *CertificateStatusesController) Outputs() []controller.Output {
	return []controller.Output{{Type: pki.CertificateStatusesType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller interface.
func (ctrl *CertificateStatusesController) Run(ctx context.Context, r controller.Runtime, _ *zap.Logger) error {
	transition := time.NewTimer(time.Hour)
	transition.Stop()

	defer transition.Stop()

	// The state may hold statuses of an earlier run that ended with an error half way.
	ctrl.written = nil

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-transition.C:
		}

		next, err := ctrl.reconcile(ctx, r)
		if err != nil {
			return err
		}

		r.ResetRestartBackoff()
		transition.Stop()

		if !next.IsZero() {
			transition.Reset(max(next.Sub(ctrl.now()), 0))
		}
	}
}

func (ctrl *CertificateStatusesController) now() time.Time {
	if ctrl.Clock != nil {
		return ctrl.Clock()
	}

	return time.Now()
}

// maxRecomputes bounds how many times a pass starts over because its inputs changed meanwhile.
const maxRecomputes = 3

// reconcile writes every status and returns the time of the next state transition.
//
// Certificates change in bursts (a rotation step reissues a dozen, written one by one), and the
// pass starts with the first of them. If more arrived while the statuses were computed, computing
// again is cheaper than writing statuses that the next pass rewrites at once.
func (ctrl *CertificateStatusesController) reconcile(ctx context.Context, r controller.Runtime) (time.Time, error) {
	for attempt := 0; ; attempt++ {
		statuses, next, err := ctrl.compute(ctx, r)
		if err != nil {
			return time.Time{}, err
		}

		if attempt < maxRecomputes && inputsChanged(r) {
			continue
		}

		return next, ctrl.write(ctx, r, statuses)
	}
}

// inputsChanged consumes a pending notification of an input change; the caller then reads the
// inputs again, which covers it.
func inputsChanged(r controller.Runtime) bool {
	select {
	case <-r.EventCh():
		return true
	default:
		return false
	}
}

// compute reads the inputs and returns every status and the time of the next state transition.
func (ctrl *CertificateStatusesController) compute(ctx context.Context, r controller.Runtime) (map[resource.ID]*pki.CertificateStatusSpec, time.Time, error) {
	certificates, err := safe.ReaderListAll[*pki.NodeCertificate](ctx, r)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("error listing node certificates: %w", err)
	}

	accepted, err := safe.ReaderListAll[*pki.AcceptedCA](ctx, r)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("error listing accepted CAs: %w", err)
	}

	ctrl.refreshPools(accepted)

	now := ctrl.now()
	verifications := ctrl.verifyAll(certificates, now)

	var next time.Time

	statuses := make(map[resource.ID]*pki.CertificateStatusSpec, certificates.Len())

	for certificate := range certificates.All() {
		id := certificate.Metadata().ID()
		spec, transition := status(certificate.TypedSpec(), verifications[id], now)
		next = earliest(next, transition)
		statuses[id] = &spec
	}

	return statuses, next, nil
}

// write makes the statuses in the state those of statuses: all of them and a cleanup of the
// others on the first pass of a run, only the differences afterwards.
func (ctrl *CertificateStatusesController) write(ctx context.Context, r controller.Runtime, statuses map[resource.ID]*pki.CertificateStatusSpec) error {
	first := ctrl.written == nil
	if first {
		r.StartTrackingOutputs()
	}

	written := make(map[resource.ID]*pki.CertificateStatus, len(statuses))

	for _, id := range slices.Sorted(maps.Keys(statuses)) {
		spec := statuses[id]

		last, ok := ctrl.written[id]
		if ok && reflect.DeepEqual(last.TypedSpec(), spec) {
			written[id] = last

			continue
		}

		res, err := writeSpec(ctx, r, last, pki.NewCertificateStatus(id), *spec)
		if err != nil {
			return fmt.Errorf("error updating certificate status %q: %w", id, err)
		}

		written[id] = res
	}

	if first {
		if err := safe.CleanupOutputs[*pki.CertificateStatus](ctx, r); err != nil {
			return fmt.Errorf("error cleaning up certificate statuses: %w", err)
		}
	}

	for id := range ctrl.written {
		if _, ok := statuses[id]; ok {
			continue
		}

		if err := r.Destroy(ctx, pki.NewCertificateStatus(id).Metadata()); err != nil && !state.IsNotFoundError(err) {
			return fmt.Errorf("error removing certificate status %q: %w", id, err)
		}
	}

	ctrl.written = written

	return nil
}

func (ctrl *CertificateStatusesController) refreshPools(accepted safe.List[*pki.AcceptedCA]) {
	pools := map[resource.ID]*trustPool{}

	for res := range accepted.All() {
		spec := res.TypedSpec()

		fingerprints := slices.Clone(spec.Fingerprints)
		slices.Sort(fingerprints)
		key := strings.Join(fingerprints, ",")

		if cached, ok := ctrl.pools[res.Metadata().ID()]; ok && cached.key == key {
			pools[res.Metadata().ID()] = cached

			continue
		}

		p := &trustPool{key: key, fingerprints: fingerprints, pool: stdx509.NewCertPool()}

		for _, crtPEM := range spec.Certificates {
			// AcceptedCAs only holds certificates that parsed when the pool was built.
			if crt, err := certs.ParseCertificate([]byte(crtPEM)); err == nil {
				p.pool.AddCert(crt)
				p.cas = append(p.cas, crt)
			}
		}

		pools[res.Metadata().ID()] = p
	}

	ctrl.pools = pools
}

// verifyAll returns the verification of every certificate with one, by ID, reusing cached
// outcomes that still hold and verifying the others concurrently.
func (ctrl *CertificateStatusesController) verifyAll(certificates safe.List[*pki.NodeCertificate], now time.Time) map[resource.ID]*verification {
	out := map[resource.ID]*verification{}
	verified := map[string]*verification{}

	var wg sync.WaitGroup

	for certificate := range certificates.All() {
		spec := certificate.TypedSpec()
		if spec.Certificate == "" {
			continue
		}

		pool := ctrl.pools[spec.Root]
		if pool == nil {
			pool = &trustPool{}
		}

		v, ok := verified[spec.Certificate]
		if !ok {
			switch cached := ctrl.verified[spec.Certificate]; {
			case cached.stillHolds(pool, now):
				v = cached
			case parsedLeaves.has(spec.Certificate):
				// Issued or verified by this process, so parsed and with its signature remembered:
				// verifying it takes less than handing it to another goroutine.
				v = &verification{}
				*v = verify(spec, pool, now)
			default:
				v = &verification{}

				wg.Go(func() { *v = verify(spec, pool, now) })
			}

			verified[spec.Certificate] = v
		}

		out[certificate.Metadata().ID()] = v
	}

	wg.Wait()

	ctrl.verified = verified

	return out
}

// stillHolds reports whether a cached verification applies to pool at now.
func (v *verification) stillHolds(pool *trustPool, now time.Time) bool {
	switch {
	case v == nil:
		return false
	case !v.recheckAt.IsZero() && !now.Before(v.recheckAt):
		return false
	case v.poolKey == pool.key:
		return true
	default:
		// The signature does not depend on the rest of the pool.
		return v.trusted && slices.Contains(pool.fingerprints, v.signerFingerprint)
	}
}

// verify parses the certificate and checks that it chains to the root's accepted CAs. Validity
// is checked at a moment within the leaf's own validity: expiry is reported by the state, trust
// answers only "does it chain to a CA accepted now".
func verify(crt *pki.NodeCertificateSpec, pool *trustPool, now time.Time) verification {
	leaf, err := parseLeaf(crt.Certificate)
	if err != nil {
		return verification{err: fmt.Errorf("certificate: %w", err)}
	}

	v := verification{
		crt:               leaf,
		summary:           summarize(leaf),
		expiringAt:        expiringTime(leaf),
		defaultRenewAt:    renewalTime(leaf),
		issuerFingerprint: crt.IssuerFingerprint,
		poolKey:           pool.key,
	}

	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}

	if at.After(leaf.NotAfter) {
		at = leaf.NotAfter
	}

	if pool.pool != nil {
		if chain, ok := trustedChain(leaf, pool, at); ok {
			v.trusted = true
			v.issuerFingerprint = certs.Fingerprint(chain[1])
			v.signerFingerprint = v.issuerFingerprint

			for _, ca := range chain[1:] {
				if v.recheckAt.IsZero() || ca.NotAfter.Before(v.recheckAt) {
					v.recheckAt = ca.NotAfter
				}
			}

			return v
		}
	}

	// Not trusted: still name the CA that signed it if the root's pool or the certificate's own
	// bundle has it; a bundle that does not parse only means the issuer stays unknown.
	candidates := pool.cas

	if bundle, err := certs.ParseCertificates([]byte(crt.CABundle)); err == nil {
		candidates = append(slices.Clone(candidates), bundle...)
	}

	for _, ca := range candidates {
		if leaf.CheckSignatureFrom(ca) == nil {
			v.issuerFingerprint = certs.Fingerprint(ca)

			break
		}
	}

	return v
}

// trustedChain is the chain from leaf to a CA of the pool x509 verification finds at the time at;
// ok is false when there is none. A leaf whose signature by a pool CA's key is already known (see
// verifiedSignatures) skips the signature check, not the rest of the verification.
func trustedChain(leaf *stdx509.Certificate, pool *trustPool, at time.Time) (chain []*stdx509.Certificate, ok bool) {
	if ca, ok := signedByAcceptedCA(leaf, pool.cas, at); ok {
		return []*stdx509.Certificate{leaf, ca}, true
	}

	chains, err := verifyChains(leaf, pool, at)
	if err != nil || len(chains) == 0 || len(chains[0]) < 2 {
		return nil, false
	}

	rememberSignature(leaf, chains[0][1])

	return chains[0], true
}

// verifyChains verifies leaf against the pool. During a rotation the pool holds CAs with the same
// subject, and x509 checks the signature of every CA with the issuer's name; trying the CA whose
// key ID the leaf names first needs one signature check instead of one per CA.
func verifyChains(leaf *stdx509.Certificate, pool *trustPool, at time.Time) ([][]*stdx509.Certificate, error) {
	opts := stdx509.VerifyOptions{Roots: pool.pool, CurrentTime: at, KeyUsages: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageAny}}

	if len(leaf.AuthorityKeyId) > 0 {
		for _, ca := range pool.cas {
			if !bytes.Equal(ca.SubjectKeyId, leaf.AuthorityKeyId) {
				continue
			}

			named := opts
			named.Roots = stdx509.NewCertPool()
			named.Roots.AddCert(ca)

			if chains, err := leaf.Verify(named); err == nil {
				return chains, nil
			}
		}
	}

	return leaf.Verify(opts)
}

// status computes the status of one certificate at now and when it next changes state.
func status(crt *pki.NodeCertificateSpec, v *verification, now time.Time) (pki.CertificateStatusSpec, time.Time) {
	status := pki.CertificateStatusSpec{Root: crt.Root, LastError: crt.LastError}

	if v == nil || v.err != nil {
		status.State = pki.StatePending

		if v != nil {
			status.LastError = joinErrors(crt.LastError, v.err.Error())
		}

		return status, time.Time{}
	}

	leaf, expiringAt := v.crt, v.expiringAt

	renewAt, err := time.Parse(time.RFC3339, crt.RenewAt)
	if err != nil {
		renewAt = v.defaultRenewAt
	}

	status = v.summary
	status.Root = crt.Root
	status.LastError = crt.LastError
	status.IssuerFingerprint = v.issuerFingerprint
	status.RenewAt = formatTime(renewAt)
	status.Trusted = v.trusted

	switch {
	case !v.trusted:
		status.State = pki.StateUntrusted
	case now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter):
		status.State = pki.StateExpired
	case !now.Before(expiringAt):
		status.State = pki.StateExpiring
	case !now.Before(renewAt):
		status.State = pki.StateRenewing
	default:
		status.State = pki.StateValid
	}

	var next time.Time

	for _, t := range []time.Time{leaf.NotBefore, renewAt, expiringAt, leaf.NotAfter, v.recheckAt} {
		if t.After(now) {
			next = earliest(next, t)
		}
	}

	return status, next
}

// summarize renders the fields of a status that depend on the certificate alone.
func summarize(leaf *stdx509.Certificate) pki.CertificateStatusSpec {
	return pki.CertificateStatusSpec{
		Subject:     nameString(leaf.RawSubject, leaf.Subject),
		DNSNames:    leaf.DNSNames,
		IPAddresses: ipStrings(leaf.IPAddresses),
		Serial:      leaf.SerialNumber.Text(16),
		Issuer:      nameString(leaf.RawIssuer, leaf.Issuer),
		NotBefore:   formatTime(leaf.NotBefore),
		NotAfter:    formatTime(leaf.NotAfter),
	}
}

// renderedNames remembers distinguished names rendered as strings, by DER: a reissued certificate
// has the subject and the issuer of the one it replaces, and rendering one takes a dozen allocations.
var renderedNames = newBoundedMemo[string, string](64)

// nameString is name.String() for the name that der encodes.
func nameString(der []byte, name pkix.Name) string {
	if s, ok := renderedNames.get(string(der)); ok {
		return s
	}

	s := name.String()
	renderedNames.put(string(der), s)

	return s
}

func joinErrors(messages ...string) string {
	return strings.Join(slices.DeleteFunc(messages, func(s string) bool { return s == "" }), "; ")
}

func ipStrings(ips []net.IP) []string {
	if len(ips) == 0 {
		return nil
	}

	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}

	return out
}
