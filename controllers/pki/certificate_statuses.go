package pki

import (
	"bytes"
	"cmp"
	"context"
	stdx509 "crypto/x509"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/controller/generic/qtransform"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// CertificateStatusesController reports every pki.NodeCertificate as a pki.CertificateStatus
// without key material: subject, SANs, issuer, validity, whether it is trusted and its state.
//
// Trusted is crypto/x509 verification of the certificate against its root's current trust pool
// (AcceptedCAs), for the extended key usages the certificate is for. States change with time, so
// each status is requeued for its next transition, read from the injected clock.
//
// A change of a root's pool is mapped here only for the certificates a worker obtains from trustd.
// A locally issued certificate follows the pool through its own NodeCertificate: the
// NodeCertificatesController writes the new pool into it as its CABundle (reissued, kept or
// failed), and that write brings the status here. In a rotation step each certificate is thus
// verified once, as reissued, rather than also as it was just before.
type CertificateStatusesController = qtransform.QController[*pki.NodeCertificate, *pki.CertificateStatus]

// NewCertificateStatusesController creates a CertificateStatusesController; clock overrides time.Now.
func NewCertificateStatusesController(clock func() time.Time) *CertificateStatusesController {
	if clock == nil {
		clock = time.Now
	}

	pools := &poolCAs{}

	return qtransform.NewQController(
		qtransform.Settings[*pki.NodeCertificate, *pki.CertificateStatus]{
			Name: "pki.CertificateStatusesController",
			MapMetadataFunc: func(crt *pki.NodeCertificate) *pki.CertificateStatus {
				return pki.NewCertificateStatus(crt.Metadata().ID())
			},
			UnmapMetadataFunc: func(status *pki.CertificateStatus) *pki.NodeCertificate {
				return pki.NewNodeCertificate(status.Metadata().ID())
			},
			TransformFunc: func(ctx context.Context, r controller.Reader, _ *zap.Logger, crt *pki.NodeCertificate, out *pki.CertificateStatus) error {
				pool, err := getOptional[*pki.AcceptedCA](ctx, r, crt.TypedSpec().Root)
				if err != nil {
					return err
				}

				now := clock()

				var next time.Time

				*out.TypedSpec(), next = certificateStatus(crt.TypedSpec(), pools.get(crt.TypedSpec().Root, pool), now)

				if next.IsZero() {
					return nil
				}

				return controller.NewRequeueInterval(max(next.Sub(now), time.Second))
			},
		},
		qtransform.WithExtraMappedInput[*pki.AcceptedCA](certificatesOfRoot),
		// Read by certificatesOfRoot for the issuer of each certificate; a change of a request is
		// followed by a change of its certificate, which maps here.
		qtransform.WithExtraMappedInput[*pki.CertificateRequest](qtransform.MapperNone()),
		// Verifying is CPU-bound, and a rotation step changes every certificate of a root at once.
		qtransform.WithConcurrency(nodeCertificatesConcurrency),
	)
}

// certificatesOfRoot maps a root's AcceptedCA to the certificates of that root obtained from
// trustd; locally issued ones are brought here by their own NodeCertificate (see the controller).
func certificatesOfRoot(ctx context.Context, _ *zap.Logger, r controller.QRuntime, root controller.ReducedResourceMetadata) ([]resource.Pointer, error) {
	certificates, err := safe.ReaderListAll[*pki.NodeCertificate](ctx, r, state.WithLabelQuery(resource.LabelEqual(pki.LabelRoot, root.ID())))
	if err != nil {
		return nil, fmt.Errorf("error listing node certificates: %w", err)
	}

	local, err := safe.ReaderListAll[*pki.CertificateRequest](ctx, r,
		state.WithLabelQuery(resource.LabelEqual(pki.LabelRoot, root.ID()), resource.LabelEqual(pki.LabelIssuer, pki.IssuerLocal)))
	if err != nil {
		return nil, fmt.Errorf("error listing certificate requests: %w", err)
	}

	var out []resource.Pointer

	for crt := range certificates.All() {
		if _, ok := local.Find(func(req *pki.CertificateRequest) bool { return req.Metadata().ID() == crt.Metadata().ID() }); ok {
			continue
		}

		out = append(out, crt.Metadata())
	}

	return out, nil
}

// certificateStatus computes the status of one certificate at now and when it next changes state;
// cas are the CAs of its root's trust pool.
func certificateStatus(crt *pki.NodeCertificateSpec, cas []*stdx509.Certificate, now time.Time) (pki.CertificateStatusSpec, time.Time) {
	status := pki.CertificateStatusSpec{Root: crt.Root, LastError: crt.LastError, State: pki.StatePending}

	if crt.Certificate == "" {
		return status, time.Time{}
	}

	leaf, err := certs.ParseCertificate([]byte(crt.Certificate))
	if err != nil {
		status.LastError = joinErrors(crt.LastError, fmt.Sprintf("certificate: %v", err))

		return status, time.Time{}
	}

	v := verify(leaf, cas, now)

	renewAt := crt.RenewAt.Time
	if renewAt.IsZero() {
		renewAt = renewalTime(leaf)
	}

	expiringAt := expiringTime(leaf)

	status = pki.CertificateStatusSpec{
		Root:              crt.Root,
		Subject:           leaf.Subject.String(),
		DNSNames:          leaf.DNSNames,
		IPAddresses:       ipStrings(leaf.IPAddresses),
		Serial:            leaf.SerialNumber.Text(16),
		Issuer:            leaf.Issuer.String(),
		IssuerFingerprint: v.issuerFingerprint,
		NotBefore:         pki.NewTime(leaf.NotBefore),
		NotAfter:          pki.NewTime(leaf.NotAfter),
		RenewAt:           pki.NewTime(renewAt),
		Trusted:           v.trusted,
		LastError:         crt.LastError,
	}

	if !v.trusted {
		status.IssuerFingerprint = cmp.Or(signerFingerprint(leaf, cas, crt.CABundle), crt.IssuerFingerprint)
	}

	status.IssuerShortFingerprint = pki.ShortFingerprint(status.IssuerFingerprint)

	switch {
	case !v.trusted:
		status.State = pki.StateUntrusted
	case now.Before(leaf.NotBefore) || !now.Before(leaf.NotAfter):
		status.State = pki.StateExpired
	case !now.Before(expiringAt):
		status.State = pki.StateExpiring
	case crt.LastError != "":
		// The certificate is still good, but renewing or reissuing it failed.
		status.State = pki.StateRenewalFailing
	case !now.Before(renewAt):
		status.State = pki.StateRenewing
	default:
		status.State = pki.StateValid
	}

	var next time.Time

	for _, t := range []time.Time{leaf.NotBefore, renewAt, expiringAt, leaf.NotAfter, v.recheckAt} {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}

	return status, next
}

// verification is the outcome of verifying a certificate against its root's pool.
type verification struct {
	trusted           bool
	issuerFingerprint string
	// recheckAt is when a CA of the chain expires, which changes the outcome.
	recheckAt time.Time
}

// verify checks with crypto/x509 that leaf chains to a CA of the pool, for the extended key usages
// it is for. The time is clamped into the leaf's own validity: expiry is reported by the state,
// trust answers only "does it chain to a CA accepted now".
func verify(leaf *stdx509.Certificate, cas []*stdx509.Certificate, now time.Time) verification {
	if len(cas) == 0 {
		return verification{}
	}

	usages := leaf.ExtKeyUsage
	if len(usages) == 0 {
		usages = []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageAny}
	}

	at := now
	if at.Before(leaf.NotBefore) {
		at = leaf.NotBefore
	}

	if at.After(leaf.NotAfter) {
		at = leaf.NotAfter
	}

	opts := stdx509.VerifyOptions{CurrentTime: at, KeyUsages: usages}

	// During a rotation the pool holds CAs with the same subject, and x509 checks the signature of
	// every CA of the issuer's name. The CAs whose key ID the leaf names are tried alone first: a
	// chain found with some of the pool is a chain of the whole pool.
	pools := []*stdx509.CertPool{poolOf(cas, nil)}

	if named := poolOf(cas, leaf.AuthorityKeyId); len(leaf.AuthorityKeyId) > 0 && named != nil && !named.Equal(pools[0]) {
		pools = []*stdx509.CertPool{named, pools[0]}
	}

	for _, roots := range pools {
		opts.Roots = roots

		if chains, err := leaf.Verify(opts); err == nil && len(chains) > 0 && len(chains[0]) > 1 {
			v := verification{trusted: true, issuerFingerprint: certs.Fingerprint(chains[0][1])}

			for _, ca := range chains[0][1:] {
				if v.recheckAt.IsZero() || ca.NotAfter.Before(v.recheckAt) {
					v.recheckAt = ca.NotAfter
				}
			}

			return v
		}
	}

	return verification{}
}

// poolOf is the pool of the CAs whose subject key ID is keyID (all of them for nil); nil if none.
func poolOf(cas []*stdx509.Certificate, keyID []byte) *stdx509.CertPool {
	var pool *stdx509.CertPool

	for _, ca := range cas {
		if keyID != nil && !bytes.Equal(ca.SubjectKeyId, keyID) {
			continue
		}

		if pool == nil {
			pool = stdx509.NewCertPool()
		}

		pool.AddCert(ca)
	}

	return pool
}

// signerFingerprint names the CA that signed an untrusted certificate if the root's pool or the
// certificate's own bundle has it; a bundle that does not parse only leaves the issuer unknown.
func signerFingerprint(leaf *stdx509.Certificate, cas []*stdx509.Certificate, bundle string) string {
	candidates := cas

	if fromBundle, err := certs.ParseCertificates([]byte(bundle)); err == nil {
		candidates = append(slices.Clone(candidates), fromBundle...)
	}

	for _, ca := range candidates {
		if leaf.CheckSignatureFrom(ca) == nil {
			return certs.Fingerprint(ca)
		}
	}

	return ""
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
