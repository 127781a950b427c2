package pki

import (
	"cmp"
	"context"
	"crypto"
	cryptorand "crypto/rand"
	"crypto/sha256"
	stdx509 "crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nodepki/nodepki/controllers/configview"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/trustd"
	"github.com/nodepki/nodepki/resources/pki"
)

// Retry and timeout defaults of the trustd round trip.
const (
	DefaultTrustdRetryMin = time.Second
	DefaultTrustdRetryMax = 30 * time.Second
	// trustdRequestTimeout bounds one round trip over all endpoints (each has trustd.AttemptTimeout).
	trustdRequestTimeout = time.Minute
	// retryJitter spreads the retries of many workers by up to ±20% of the delay.
	retryJitter = 0.2
)

// WorkerAPICertificateController obtains the node API server certificate (pki.NodeCertificate
// "api") from trustd on nodes whose os root has no issuing key (workers): it generates a key of
// the OS CA's family, sends a CSR for the node's hostname and CertSAN "api" with the join token,
// and checks that the answer is for that key and those SANs and chains to an accepted OS CA.
//
// The round trip runs outside the reconcile: an input change cancels it and starts over with the
// new inputs. While it fails, the error is published in LastError with exponential backoff and
// a previous, still valid certificate is kept. The certificate is requested again at its RenewAt
// or when its SANs or the issuing CA change. On control planes, which issue "api" themselves,
// this controller does nothing (and removes an "api" it created while the node was a worker).
type WorkerAPICertificateController struct {
	// Hostname is the node's hostname, the common name of the certificate.
	Hostname string
	// TrustdEndpoints are extra trustd endpoints (host or host:port), tried before the control
	// plane endpoint of the machine config.
	TrustdEndpoints []string
	// SourceAddress, if set, is the address requests to trustd are made from (the node's
	// --address), so that trustd tells the nodes of one host apart.
	SourceAddress netip.Addr
	// RetryMin and RetryMax bound the backoff between failed round trips (defaults
	// DefaultTrustdRetryMin and DefaultTrustdRetryMax).
	RetryMin, RetryMax time.Duration

	config configview.Cache
	// failures counts consecutive failed round trips for the same attempt.
	failures int
	// attempt identifies the inputs of the last failed round trip, retryAt when it may be retried;
	// a change of inputs retries at once.
	attempt string
	retryAt time.Time
}

// Name implements controller.Controller interface.
func (ctrl *WorkerAPICertificateController) Name() string {
	return "pki.WorkerAPICertificateController"
}

// Inputs implements controller.Controller interface.
func (ctrl *WorkerAPICertificateController) Inputs() []controller.Input {
	return []controller.Input{
		configview.Input(),
		{Namespace: pki.NamespaceName, Type: pki.RootSecretsType, ID: optional.Some(pki.RootOS), Kind: controller.InputWeak},
		{Namespace: pki.NamespaceName, Type: pki.AcceptedCAsType, ID: optional.Some(pki.RootOS), Kind: controller.InputWeak},
		{Namespace: pki.NamespaceName, Type: pki.CertSANsType, ID: optional.Some(pki.SANsAPI), Kind: controller.InputWeak},
	}
}

// Outputs implements controller.Controller interface.
func (ctrl *WorkerAPICertificateController) Outputs() []controller.Output {
	return []controller.Output{{Type: pki.NodeCertificatesType, Kind: controller.OutputShared}}
}

// Run implements controller.Controller interface.
func (ctrl *WorkerAPICertificateController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	wake := time.NewTimer(time.Hour)
	wake.Stop()

	defer wake.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-wake.C:
		}

		next, err := ctrl.reconcile(ctx, r, logger)
		if err != nil {
			return err
		}

		wake.Stop()

		if !next.IsZero() {
			wake.Reset(max(time.Until(next), 0))
		}

		r.ResetRestartBackoff()
	}
}

// workerAPIRequest is everything one trustd round trip needs.
type workerAPIRequest struct {
	profile   certs.Profile
	digest    string
	endpoints []string
	source    netip.Addr
	token     string
	rootsPEM  []byte
	roots     []*stdx509.Certificate
	caPublic  crypto.PublicKey
}

// reconcile returns when the controller should wake up by itself (renewal or retry), or zero.
func (ctrl *WorkerAPICertificateController) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger) (time.Time, error) {
	root, err := safe.ReaderGetByID[*pki.RootSecret](ctx, r, pki.RootOS)
	if err != nil && !state.IsNotFoundError(err) {
		return time.Time{}, fmt.Errorf("error reading the os root: %w", err)
	}

	current, owner, err := ctrl.current(ctx, r)
	if err != nil {
		return time.Time{}, err
	}

	if root == nil || root.TypedSpec().IssuingKey != "" {
		// No os root, or a control plane that issues "api" itself: nothing of ours may remain.
		ctrl.resetRetry()

		if owner != ctrl.Name() {
			return time.Time{}, nil
		}

		reason := "the node issues its own api certificate"
		if root == nil {
			reason = "the os root is gone"
		}

		return time.Time{}, ctrl.removeOwn(ctx, r, logger.With(zap.String("reason", reason)))
	}

	if current != nil && owner != ctrl.Name() {
		// Left from when the node was a control plane; its controller removes it now that the os
		// key is gone, and the restart backoff brings us back then.
		return time.Time{}, fmt.Errorf("the api certificate is owned by %q, waiting for it to be removed", owner)
	}

	req, ready, err := ctrl.buildRequest(ctx, r, root.TypedSpec())
	if err != nil {
		return time.Time{}, err
	}

	if !ready {
		return time.Time{}, nil
	}

	now := time.Now()

	if current != nil && current.Request == req.digest && !due(*current, now) {
		ctrl.resetRetry()

		// A failure whose inputs have since been reverted no longer applies to this certificate.
		if err := ctrl.write(ctx, r, func(spec *pki.NodeCertificateSpec) { *spec = *current; spec.LastError = "" }); err != nil {
			return time.Time{}, err
		}

		return renewAtOf(*current), nil
	}

	attempt := req.attemptKey()
	if attempt != ctrl.attempt {
		// New inputs may fix what failed: try them at once, with a fresh backoff.
		ctrl.resetRetry()
	} else if now.Before(ctrl.retryAt) {
		return ctrl.retryAt, nil
	}

	spec, err := ctrl.roundTrip(ctx, r, req)
	if errors.Is(err, errRoundTripInterrupted) {
		return time.Time{}, nil
	}

	if err != nil {
		ctrl.failures++
		ctrl.attempt = attempt
		ctrl.retryAt = time.Now().Add(ctrl.backoff())

		logger.Warn("error obtaining the API certificate from trustd",
			zap.Error(err), zap.Int("failures", ctrl.failures), zap.Time("retry_at", ctrl.retryAt))

		lastError := err.Error()

		if err = ctrl.write(ctx, r, func(s *pki.NodeCertificateSpec) {
			if current != nil {
				*s = *current
			}

			s.Root = pki.RootOS
			s.LastError = lastError
		}); err != nil {
			return time.Time{}, err
		}

		return ctrl.retryAt, nil
	}

	ctrl.resetRetry()

	if err := ctrl.write(ctx, r, func(s *pki.NodeCertificateSpec) { *s = spec }); err != nil {
		return time.Time{}, err
	}

	if crt, err := parseLeaf(spec.Certificate); err == nil {
		logger.Info("obtained the API certificate from trustd",
			zap.String("serial", crt.SerialNumber.Text(16)),
			zap.String("issuer_fingerprint", spec.IssuerFingerprint),
			zap.Time("not_after", crt.NotAfter),
			zap.String("renew_at", spec.RenewAt),
		)
	}

	return renewAtOf(spec), nil
}

// current is the "api" certificate (nil if there is none) and its owner.
func (ctrl *WorkerAPICertificateController) current(ctx context.Context, r controller.Runtime) (*pki.NodeCertificateSpec, string, error) {
	res, err := safe.ReaderGetByID[*pki.NodeCertificate](ctx, r, pki.CertAPI)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil, "", nil
		}

		return nil, "", fmt.Errorf("error reading the api certificate: %w", err)
	}

	spec := res.TypedSpec().DeepCopy()

	return &spec, res.Metadata().Owner(), nil
}

// removeOwn destroys the "api" certificate this controller created.
func (ctrl *WorkerAPICertificateController) removeOwn(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	if err := r.Destroy(ctx, pki.NewNodeCertificate(pki.CertAPI).Metadata()); err != nil && !state.IsNotFoundError(err) {
		return fmt.Errorf("error removing the api certificate: %w", err)
	}

	logger.Info("removed the trustd-issued api certificate")

	return nil
}

func (ctrl *WorkerAPICertificateController) write(ctx context.Context, r controller.Runtime, update func(*pki.NodeCertificateSpec)) error {
	if err := safe.WriterModify(ctx, r, pki.NewNodeCertificate(pki.CertAPI), func(res *pki.NodeCertificate) error {
		update(res.TypedSpec())

		return nil
	}); err != nil {
		return fmt.Errorf("error writing the api certificate: %w", err)
	}

	return nil
}

// buildRequest reads the remaining inputs; ready is false while one is missing.
func (ctrl *WorkerAPICertificateController) buildRequest(ctx context.Context, r controller.Runtime, root *pki.RootSecretSpec) (workerAPIRequest, bool, error) {
	accepted, err := safe.ReaderGetByID[*pki.AcceptedCA](ctx, r, pki.RootOS)
	if err != nil {
		if state.IsNotFoundError(err) {
			return workerAPIRequest{}, false, nil
		}

		return workerAPIRequest{}, false, fmt.Errorf("error reading the accepted OS CAs: %w", err)
	}

	sans, err := safe.ReaderGetByID[*pki.CertSAN](ctx, r, pki.SANsAPI)
	if err != nil {
		if state.IsNotFoundError(err) {
			return workerAPIRequest{}, false, nil
		}

		return workerAPIRequest{}, false, fmt.Errorf("error reading the api SANs: %w", err)
	}

	doc, err := configview.Read(ctx, r, &ctrl.config)
	if err != nil {
		return workerAPIRequest{}, false, err
	}

	if len(accepted.TypedSpec().Certificates) == 0 {
		return workerAPIRequest{}, false, nil
	}

	req := workerAPIRequest{
		profile: certs.Profile{
			CommonName:  ctrl.Hostname,
			DNSNames:    sans.TypedSpec().DNSNames,
			IPAddresses: parseIPs(sans.TypedSpec().IPs),
			KeyUsage:    stdx509.KeyUsageDigitalSignature,
			ExtKeyUsage: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth},
			Lifetime:    24 * time.Hour,
		},
		endpoints: slices.Clone(ctrl.TrustdEndpoints),
		source:    ctrl.SourceAddress,
		rootsPEM:  []byte(strings.Join(accepted.TypedSpec().Certificates, "")),
	}

	if len(root.Tokens) > 0 {
		req.token = root.Tokens[0]
	}

	if doc != nil && doc.Cluster != nil && doc.Cluster.ControlPlane != nil {
		host := endpointHost(doc.Cluster.ControlPlane.Endpoint)
		if endpoint := net.JoinHostPort(host, strconv.Itoa(trustd.DefaultPort)); host != "" && !slices.Contains(req.endpoints, endpoint) {
			req.endpoints = append(req.endpoints, endpoint)
		}
	}

	req.roots, err = certs.ParseCertificates(req.rootsPEM)
	if err != nil {
		return workerAPIRequest{}, false, fmt.Errorf("error reading the accepted OS CAs: %w", err)
	}

	// The issuing CA is the last accepted one; the key follows its family.
	issuing := req.roots[len(req.roots)-1]
	req.caPublic = issuing.PublicKey
	req.digest = requestDigest(req.profile, certs.Fingerprint(issuing))

	return req, true, nil
}

// attemptKey changes whenever anything that could make a failed round trip succeed changes.
func (req workerAPIRequest) attemptKey() string {
	sum := sha256.New()

	for _, part := range append([]string{req.digest, req.token, string(req.rootsPEM)}, req.endpoints...) {
		sum.Write([]byte(part))
		sum.Write([]byte{0})
	}

	return hex.EncodeToString(sum.Sum(nil))
}

// errRoundTripInterrupted reports a round trip cancelled by an input change or shutdown.
var errRoundTripInterrupted = errors.New("trustd round trip interrupted")

// roundTrip runs the trustd request in a goroutine, so that an input change (or shutdown) can
// cancel it; it then queues a reconcile and returns errRoundTripInterrupted.
func (ctrl *WorkerAPICertificateController) roundTrip(ctx context.Context, r controller.Runtime, req workerAPIRequest) (pki.NodeCertificateSpec, error) {
	callCtx, cancel := context.WithTimeout(ctx, trustdRequestTimeout)
	defer cancel()

	type result struct {
		spec pki.NodeCertificateSpec
		err  error
	}

	done := make(chan result, 1)

	go func() {
		spec, err := ctrl.obtain(callCtx, req)
		done <- result{spec, err}
	}()

	select {
	case res := <-done:
		return res.spec, res.err
	case <-r.EventCh():
		cancel()
		<-done
		r.QueueReconcile()

		return pki.NodeCertificateSpec{}, errRoundTripInterrupted
	case <-ctx.Done():
		cancel()
		<-done

		return pki.NodeCertificateSpec{}, errRoundTripInterrupted
	}
}

// obtain generates a key and CSR, has trustd sign it and checks the answer.
func (ctrl *WorkerAPICertificateController) obtain(ctx context.Context, req workerAPIRequest) (pki.NodeCertificateSpec, error) {
	if req.token == "" {
		return pki.NodeCertificateSpec{}, errors.New("no join token: set machine.token")
	}

	if len(req.endpoints) == 0 {
		return pki.NodeCertificateSpec{}, errors.New("no trustd endpoint: set cluster.controlPlane.endpoint or pass a trustd endpoint")
	}

	key, keyPEM, err := certs.NewKeyLike(req.caPublic)
	if err != nil {
		return pki.NodeCertificateSpec{}, fmt.Errorf("error generating the key: %w", err)
	}

	csrDER, err := stdx509.CreateCertificateRequest(cryptorand.Reader, &stdx509.CertificateRequest{
		Subject:     pkix.Name{CommonName: req.profile.CommonName},
		DNSNames:    req.profile.DNSNames,
		IPAddresses: req.profile.IPAddresses,
	}, key)
	if err != nil {
		return pki.NodeCertificateSpec{}, fmt.Errorf("error creating the CSR: %w", err)
	}

	caPEM, crtPEM, err := trustd.RequestCertificate(ctx, req.endpoints, req.rootsPEM, req.token,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}), trustd.FromAddress(req.source))
	if err != nil {
		return pki.NodeCertificateSpec{}, err
	}

	crt, issuer, err := checkTrustdCertificate(crtPEM, req, key)
	if err != nil {
		return pki.NodeCertificateSpec{}, err
	}

	certificate := string(crtPEM)
	rememberLeaf(certificate, crt, issuer)

	return pki.NodeCertificateSpec{
		Root:              pki.RootOS,
		Certificate:       certificate,
		Key:               string(keyPEM),
		CABundle:          string(caPEM),
		IssuerFingerprint: certs.Fingerprint(issuer),
		Request:           req.digest,
		RenewAt:           formatTime(renewalTime(crt)),
	}, nil
}

// checkTrustdCertificate makes sure the certificate is for our key, for the SANs we asked for,
// usable as a server certificate and issued by a CA this node accepts; it returns the issuer.
func checkTrustdCertificate(crtPEM []byte, req workerAPIRequest, key crypto.Signer) (crt, issuer *stdx509.Certificate, err error) {
	crt, err = certs.ParseCertificate(crtPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("trustd returned an unusable certificate: %w", err)
	}

	if !certs.KeyMatchesCertificate(crt, key) {
		return nil, nil, errors.New("trustd returned a certificate for another key")
	}

	if !slices.Equal(crt.DNSNames, req.profile.DNSNames) || !slices.EqualFunc(crt.IPAddresses, req.profile.IPAddresses, net.IP.Equal) {
		return nil, nil, fmt.Errorf("trustd returned a certificate for other SANs (DNS %v, IP %v)", crt.DNSNames, crt.IPAddresses)
	}

	pool := stdx509.NewCertPool()
	for _, root := range req.roots {
		pool.AddCert(root)
	}

	chains, err := crt.Verify(stdx509.VerifyOptions{Roots: pool, KeyUsages: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, nil, fmt.Errorf("trustd returned a certificate this node does not accept: %w", err)
	}

	// Chains start with crt, then its issuer.
	return crt, chains[0][1], nil
}

// backoff doubles from RetryMin up to RetryMax with jitter.
func (ctrl *WorkerAPICertificateController) backoff() time.Duration {
	minDelay := cmp.Or(ctrl.RetryMin, DefaultTrustdRetryMin)
	maxDelay := max(cmp.Or(ctrl.RetryMax, DefaultTrustdRetryMax), minDelay)

	delay := minDelay
	for i := 1; i < ctrl.failures && delay < maxDelay; i++ {
		delay *= 2
	}

	delay = min(delay, maxDelay)

	return time.Duration(float64(delay) * (1 - retryJitter + 2*retryJitter*mathrand.Float64())) //nolint:gosec // jitter, not a secret
}

func (ctrl *WorkerAPICertificateController) resetRetry() {
	ctrl.failures, ctrl.attempt, ctrl.retryAt = 0, "", time.Time{}
}
