package pki

import (
	"context"
	stdx509 "crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
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

	// verified caches parsing and chain verification by certificate and pool: a pass recomputes
	// every status, but only changed certificates or pools need the cryptography again.
	verified map[verificationKey]verification
	pools    map[resource.ID]trustPool
}

type verificationKey struct {
	certificate string
	pool        string
}

type verification struct {
	crt               *stdx509.Certificate
	trusted           bool
	issuerFingerprint string
	// recheckAt is when a CA of the chain expires, which can change the outcome.
	recheckAt time.Time
}

// trustPool is the parsed AcceptedCAs of one root; key identifies its contents.
type trustPool struct {
	key  string
	pool *stdx509.CertPool
	cas  []*stdx509.Certificate
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

// reconcile writes every status and returns the time of the next state transition.
func (ctrl *CertificateStatusesController) reconcile(ctx context.Context, r controller.Runtime) (time.Time, error) {
	certificates, err := safe.ReaderListAll[*pki.NodeCertificate](ctx, r)
	if err != nil {
		return time.Time{}, fmt.Errorf("error listing node certificates: %w", err)
	}

	accepted, err := safe.ReaderListAll[*pki.AcceptedCA](ctx, r)
	if err != nil {
		return time.Time{}, fmt.Errorf("error listing accepted CAs: %w", err)
	}

	ctrl.refreshPools(accepted)

	now := ctrl.now()
	verified := map[verificationKey]verification{}

	var next time.Time

	r.StartTrackingOutputs()

	for certificate := range certificates.All() {
		spec, transition := ctrl.status(certificate.TypedSpec(), now, verified)
		next = earliest(next, transition)

		if err = safe.WriterModify(ctx, r, pki.NewCertificateStatus(certificate.Metadata().ID()), func(res *pki.CertificateStatus) error {
			*res.TypedSpec() = spec

			return nil
		}); err != nil {
			return time.Time{}, fmt.Errorf("error updating certificate status %q: %w", certificate.Metadata().ID(), err)
		}
	}

	ctrl.verified = verified

	if err = safe.CleanupOutputs[*pki.CertificateStatus](ctx, r); err != nil {
		return time.Time{}, fmt.Errorf("error cleaning up certificate statuses: %w", err)
	}

	return next, nil
}

func (ctrl *CertificateStatusesController) refreshPools(accepted safe.List[*pki.AcceptedCA]) {
	pools := map[resource.ID]trustPool{}

	for res := range accepted.All() {
		spec := res.TypedSpec()
		key := strings.Join(spec.Fingerprints, ",")

		if cached, ok := ctrl.pools[res.Metadata().ID()]; ok && cached.key == key {
			pools[res.Metadata().ID()] = cached

			continue
		}

		p := trustPool{key: key, pool: stdx509.NewCertPool()}

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

// status computes the status of one certificate at now and when it next changes state.
func (ctrl *CertificateStatusesController) status(
	crt *pki.NodeCertificateSpec, now time.Time, verified map[verificationKey]verification,
) (pki.CertificateStatusSpec, time.Time) {
	status := pki.CertificateStatusSpec{Root: crt.Root, LastError: crt.LastError}

	if crt.Certificate == "" {
		status.State = pki.StatePending

		return status, time.Time{}
	}

	pool := ctrl.pools[crt.Root]
	key := verificationKey{certificate: crt.Certificate, pool: pool.key}

	v, ok := ctrl.verified[key]
	if !ok || (!v.recheckAt.IsZero() && !now.Before(v.recheckAt)) {
		var err error

		v, err = verify(crt, pool, now)
		if err != nil {
			status.State = pki.StatePending
			status.LastError = strings.TrimPrefix(strings.Join([]string{crt.LastError, err.Error()}, "; "), "; ")

			return status, time.Time{}
		}
	}

	verified[key] = v

	leaf := v.crt

	renewAt, err := time.Parse(time.RFC3339, crt.RenewAt)
	if err != nil {
		renewAt = renewalTime(leaf)
	}

	status.Subject = leaf.Subject.String()
	status.DNSNames = leaf.DNSNames
	status.IPAddresses = ipStrings(leaf.IPAddresses)
	status.Serial = leaf.SerialNumber.Text(16)
	status.Issuer = leaf.Issuer.String()
	status.IssuerFingerprint = v.issuerFingerprint
	status.NotBefore = formatTime(leaf.NotBefore)
	status.NotAfter = formatTime(leaf.NotAfter)
	status.RenewAt = formatTime(renewAt)
	status.Trusted = v.trusted

	var next time.Time

	for _, t := range []time.Time{leaf.NotBefore, renewAt, expiringTime(leaf), leaf.NotAfter, v.recheckAt} {
		if t.After(now) {
			next = earliest(next, t)
		}
	}

	switch {
	case !v.trusted:
		status.State = pki.StateUntrusted
	case now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter):
		status.State = pki.StateExpired
	case !now.Before(expiringTime(leaf)):
		status.State = pki.StateExpiring
	case !now.Before(renewAt):
		status.State = pki.StateRenewing
	default:
		status.State = pki.StateValid
	}

	return status, next
}

// verify parses the certificate and checks that it chains to the root's accepted CAs. Validity
// is checked at a moment within the leaf's own validity: expiry is reported by the state, trust
// answers only "does it chain to a CA accepted now".
func verify(crt *pki.NodeCertificateSpec, pool trustPool, now time.Time) (verification, error) {
	leaf, err := certs.ParseCertificate([]byte(crt.Certificate))
	if err != nil {
		return verification{}, fmt.Errorf("certificate: %w", err)
	}

	v := verification{crt: leaf, issuerFingerprint: crt.IssuerFingerprint}

	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}

	if at.After(leaf.NotAfter) {
		at = leaf.NotAfter
	}

	if pool.pool != nil {
		chains, err := leaf.Verify(stdx509.VerifyOptions{
			Roots:       pool.pool,
			CurrentTime: at,
			KeyUsages:   []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageAny},
		})
		if err == nil && len(chains) > 0 && len(chains[0]) > 1 {
			v.trusted = true
			v.issuerFingerprint = certs.Fingerprint(chains[0][1])

			for _, ca := range chains[0][1:] {
				if v.recheckAt.IsZero() || ca.NotAfter.Before(v.recheckAt) {
					v.recheckAt = ca.NotAfter
				}
			}

			return v, nil
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

	return v, nil
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
