package pki

import (
	"context"
	stdx509 "crypto/x509"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/controller/generic"
	"github.com/cosi-project/runtime/pkg/controller/generic/qtransform"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/xerrors"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// nodeCertificatesConcurrency is how many certificates are obtained at once: signing is CPU-bound
// and a rotation step reissues a dozen, and a worker's wait on trustd must not hold up the others.
const nodeCertificatesConcurrency = 4

// NodeCertificatesController obtains the pki.NodeCertificate of every pki.CertificateRequest: a
// local request is signed with the issuing key of its root (RootSecrets), a trustd request (a
// worker's "api") is a CSR sent to trustd (see trustdIssuer). The certificate's CA bundle is the
// root's trust pool (AcceptedCAs).
//
// A certificate is (re)issued when it is missing, when what it is issued for changed (the Request
// digest: the request and the issuing CA), when its previous attempt failed, and at its RenewAt:
// each reconcile requeues the certificate for its RenewAt, read from the injected clock. A locally
// issued certificate waits until the root's trust pool has the issuing CA, so that its bundle
// always trusts its issuer. A failure keeps the previous certificate, with LastError set.
//
// Every reconcile of a locally issued certificate that does not wait writes the root's current
// trust pool as its CABundle (empty without a pool), whether the certificate is reissued, kept or
// failed: a change of the pool always reaches the NodeCertificate. CertificateStatusesController
// relies on it to verify such a certificate once per change, not for the pool and again for the
// reissue.
type NodeCertificatesController = qtransform.QController[*pki.CertificateRequest, *pki.NodeCertificate]

// NodeCertificatesOptions configure a NodeCertificatesController.
type NodeCertificatesOptions struct {
	// Clock overrides time.Now.
	Clock func() time.Time
	// Trustd configures the requests sent to trustd.
	Trustd TrustdOptions
}

// NewNodeCertificatesController creates a NodeCertificatesController.
func NewNodeCertificatesController(opts NodeCertificatesOptions) *NodeCertificatesController {
	issuer := &nodeCertificates{clock: opts.Clock, trustd: newTrustdIssuer(opts.Trustd), unwritten: &unwritten{}, cas: &issuingCAs{}}

	return qtransform.NewQController(
		qtransform.Settings[*pki.CertificateRequest, *pki.NodeCertificate]{
			Name: "pki.NodeCertificatesController",
			MapMetadataFunc: func(req *pki.CertificateRequest) *pki.NodeCertificate {
				return pki.NewNodeCertificate(req.Metadata().ID())
			},
			UnmapMetadataFunc: func(crt *pki.NodeCertificate) *pki.CertificateRequest {
				return pki.NewCertificateRequest(crt.Metadata().ID())
			},
			TransformFunc: issuer.transform,
		},
		qtransform.WithExtraMappedInput[*pki.RootSecret](requestsOfRoot),
		qtransform.WithExtraMappedInput[*pki.AcceptedCA](requestsOfRoot),
		qtransform.WithConcurrency(nodeCertificatesConcurrency),
	)
}

// requestsOfRoot maps a root's RootSecret or AcceptedCA to the requests of that root.
func requestsOfRoot(ctx context.Context, _ *zap.Logger, r controller.QRuntime, root controller.ReducedResourceMetadata) ([]resource.Pointer, error) {
	requests, err := safe.ReaderListAll[*pki.CertificateRequest](ctx, r, state.WithLabelQuery(resource.LabelEqual(pki.LabelRoot, root.ID())))
	if err != nil {
		return nil, fmt.Errorf("error listing certificate requests: %w", err)
	}

	out := make([]resource.Pointer, 0, requests.Len())

	for req := range requests.All() {
		out = append(out, req.Metadata())
	}

	return out, nil
}

type nodeCertificates struct {
	clock     func() time.Time
	trustd    *trustdIssuer
	unwritten *unwritten
	cas       *issuingCAs
}

func (ctrl *nodeCertificates) now() time.Time {
	if ctrl.clock != nil {
		return ctrl.clock()
	}

	return time.Now()
}

// transform brings one certificate in line with its request.
func (ctrl *nodeCertificates) transform(ctx context.Context, r controller.Reader, logger *zap.Logger, req *pki.CertificateRequest, out *pki.NodeCertificate) error {
	request := req.TypedSpec()
	spec := out.TypedSpec()
	spec.Root = request.Root
	out.Metadata().Labels().Set(pki.LabelRoot, request.Root)

	root, err := getOptional[*pki.RootSecret](ctx, r, request.Root)
	if err != nil {
		return err
	}

	pool, err := getOptional[*pki.AcceptedCA](ctx, r, request.Root)
	if err != nil {
		return err
	}

	now := ctrl.now()

	logger = logger.With(zap.String("id", req.Metadata().ID()))

	switch request.Issuer {
	case pki.IssuerLocal:
		if err = ctrl.issueLocal(logger, req.Metadata().ID(), request, root, pool, spec, now); err != nil {
			return err
		}

		spec.CABundle = poolBundle(pool)

		if spec.LastError != "" {
			logger.Warn("error issuing the certificate", zap.String("error", spec.LastError), zap.Duration("retry_in", localRetryInterval))

			// An input change that fixes it requeues the certificate at once; the interval covers
			// errors that pass by themselves.
			return controller.NewRequeueInterval(localRetryInterval)
		}
	case pki.IssuerTrustd:
		if err = ctrl.trustd.obtain(ctx, logger, ctrl.unwritten, req.Metadata().ID(), request, root, pool, spec, now); err != nil {
			return err
		}
	default:
		spec.LastError = fmt.Sprintf("unknown issuer %q in the certificate request", request.Issuer)

		return nil
	}

	return renewalRequeue(spec, now)
}

// localRetryInterval is how often a certificate whose local issuance failed is tried again.
const localRetryInterval = time.Minute

// renewalRequeue requeues the certificate for its RenewAt; a failed one is retried by its own
// requeue (trustd) or by the input change that may fix it.
func renewalRequeue(spec *pki.NodeCertificateSpec, now time.Time) error {
	if spec.Certificate == "" || spec.LastError != "" || spec.RenewAt.IsZero() {
		return nil
	}

	// The queue runs on real time; one second is the resolution of RenewAt.
	return controller.NewRequeueInterval(max(spec.RenewAt.Sub(now), time.Second))
}

// issueLocal signs the certificate with the root's issuing key.
func (ctrl *nodeCertificates) issueLocal(
	logger *zap.Logger, id resource.ID, request *pki.CertificateRequestSpec, root *pki.RootSecret, pool *pki.AcceptedCA, spec *pki.NodeCertificateSpec, now time.Time,
) error {
	if root == nil || root.TypedSpec().IssuingCert == "" || root.TypedSpec().IssuingKey == "" {
		spec.LastError = fmt.Sprintf("no issuing CA with its key for the %s root in the machine config", request.Root)

		return nil
	}

	issuing := ctrl.cas.get(request.Root, root.TypedSpec().IssuingCert, root.TypedSpec().IssuingKey)
	if issuing.crtErr != nil {
		spec.LastError = fmt.Sprintf("error loading the %s issuing CA: %v", request.Root, issuing.crtErr)

		return nil //nolint:nilerr // the error is the certificate's LastError, and the reconcile writes it
	}

	fingerprint := issuing.fingerprint

	if pool == nil || pool.TypedSpec().IssuingFingerprint != fingerprint {
		// The trust pool follows the same config change; its update requeues the certificate.
		return xerrors.NewTaggedf[qtransform.SkipReconcileTag]("waiting for the %s trust pool to have the issuing CA", request.Root)
	}

	digest := requestDigest(request, fingerprint)

	if !due(spec, digest, now) {
		ctrl.unwritten.forget(id)

		return nil
	}

	if issued, ok := ctrl.unwritten.get(id, digest, now); ok {
		*spec = issued

		return nil
	}

	profile, err := profileOf(request)
	if err != nil {
		spec.LastError = err.Error()

		return nil //nolint:nilerr // the error is the certificate's LastError, and the reconcile writes it
	}

	ca, err := issuing.load()
	if err != nil {
		spec.LastError = fmt.Sprintf("error loading the %s issuing CA: %v", request.Root, err)

		return nil
	}

	issued, err := ca.IssueParsed(profile, issuanceTime(now))
	if err != nil {
		spec.LastError = fmt.Sprintf("error issuing the certificate: %v", err)

		return nil
	}

	*spec = pki.NodeCertificateSpec{
		Root:              request.Root,
		Certificate:       string(issued.CrtPEM),
		Key:               string(issued.KeyPEM),
		IssuerFingerprint: fingerprint,
		Request:           digest,
		RenewAt:           pki.NewTime(renewalTime(issued.Crt)),
	}

	ctrl.unwritten.put(id, *spec)

	logger.Info("issued certificate",
		zap.String("root", request.Root),
		zap.String("serial", issued.Crt.SerialNumber.Text(16)),
		zap.String("issuer_fingerprint", fingerprint),
		zap.Time("not_after", issued.Crt.NotAfter),
	)

	return nil
}

// poolBundle is the CA bundle of a root's trust pool; empty without one.
func poolBundle(pool *pki.AcceptedCA) string {
	if pool == nil {
		return ""
	}

	return strings.Join(pool.TypedSpec().Certificates, "")
}

// due reports whether the certificate must be (re)issued for the request digest at now.
func due(spec *pki.NodeCertificateSpec, digest string, now time.Time) bool {
	return spec.Certificate == "" || spec.Key == "" || spec.Request != digest || spec.LastError != "" ||
		spec.RenewAt.IsZero() || !now.Before(spec.RenewAt.Time)
}

// profileOf is the issuance profile of a request.
func profileOf(request *pki.CertificateRequestSpec) (certs.Profile, error) {
	p := certs.Profile{
		CommonName:   request.CommonName,
		Organization: request.Organization,
		DNSNames:     request.DNSNames,
		Lifetime:     request.Lifetime,
	}

	for _, addr := range request.IPAddresses {
		p.IPAddresses = append(p.IPAddresses, net.IP(addr.AsSlice()))
	}

	for _, usage := range request.KeyUsage {
		switch usage {
		case pki.KeyUsageDigitalSignature:
			p.KeyUsage |= stdx509.KeyUsageDigitalSignature
		case pki.KeyUsageKeyEncipherment:
			p.KeyUsage |= stdx509.KeyUsageKeyEncipherment
		default:
			return certs.Profile{}, fmt.Errorf("unknown key usage %q in the certificate request", usage)
		}
	}

	for _, usage := range request.ExtKeyUsage {
		switch usage {
		case pki.ExtKeyUsageServerAuth:
			p.ExtKeyUsage = append(p.ExtKeyUsage, stdx509.ExtKeyUsageServerAuth)
		case pki.ExtKeyUsageClientAuth:
			p.ExtKeyUsage = append(p.ExtKeyUsage, stdx509.ExtKeyUsageClientAuth)
		default:
			return certs.Profile{}, fmt.Errorf("unknown extended key usage %q in the certificate request", usage)
		}
	}

	return p, nil
}

// getOptional reads a resource of the default namespace by ID; nil if there is none.
func getOptional[R generic.ResourceWithRD](ctx context.Context, r controller.Reader, id resource.ID) (R, error) {
	res, err := safe.ReaderGetByID[R](ctx, r, id)
	if err != nil {
		var zero R

		if state.IsNotFoundError(err) {
			return zero, nil
		}

		return zero, fmt.Errorf("error reading %s: %w", id, err)
	}

	return res, nil
}

// unwritten holds the certificates a reconcile obtained until the state has them. Modify runs the
// transform again when the resource changed between its read and its write (another controller
// adding its finalizer to a new certificate), and that run must write the certificate just
// obtained, not sign or request another. One entry per certificate at most, dropped once the
// state holds it.
type unwritten struct {
	mu      sync.Mutex
	entries map[resource.ID]pki.NodeCertificateSpec
}

// get returns the certificate obtained for id and digest if it is not due yet at now.
func (u *unwritten) get(id resource.ID, digest string, now time.Time) (pki.NodeCertificateSpec, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()

	spec, ok := u.entries[id]
	if !ok || due(&spec, digest, now) {
		return pki.NodeCertificateSpec{}, false
	}

	return spec, true
}

func (u *unwritten) put(id resource.ID, spec pki.NodeCertificateSpec) {
	u.mu.Lock()
	defer u.mu.Unlock()

	if u.entries == nil {
		u.entries = map[resource.ID]pki.NodeCertificateSpec{}
	}

	u.entries[id] = spec
}

func (u *unwritten) forget(id resource.ID) {
	u.mu.Lock()
	defer u.mu.Unlock()

	delete(u.entries, id)
}
