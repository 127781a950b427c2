package pki

import (
	"cmp"
	"context"
	"crypto"
	cryptorand "crypto/rand"
	stdx509 "crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/siderolabs/go-retry/retry"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/trustd"
	"github.com/nodepki/nodepki/resources/pki"
)

// Retry defaults of the trustd round trip.
const (
	// DefaultTrustdRetryUnit is the unit of the exponential backoff between attempts.
	DefaultTrustdRetryUnit = time.Second
	// DefaultTrustdRetryWindow bounds the attempts of one reconcile; when they all fail, or trustd
	// refuses the request, LastError is written and the certificate is requeued after
	// trustdRequeueFactor windows.
	DefaultTrustdRetryWindow = 10 * time.Second
	trustdRequeueFactor      = 3
)

// TrustdOptions configure how a worker obtains its certificates from trustd.
type TrustdOptions struct {
	// SourceAddress, if set, is the address requests are made from (the node's own address), so
	// that trustd tells the nodes of one host apart.
	SourceAddress netip.Addr
	// RetryUnit and RetryWindow override DefaultTrustdRetryUnit and DefaultTrustdRetryWindow.
	RetryUnit, RetryWindow time.Duration
}

// trustdIssuer is the strategy of NodeCertificatesController for requests with IssuerTrustd: it
// generates a key of the OS CA's family, sends a CSR for the request's subject and SANs with the
// join token (the os root's first token) and checks that the answer is for that key and those
// SANs and chains to an accepted OS CA. Attempts are retried with exponential backoff (go-retry)
// within a window; the lifetime is the one trustd's control plane signs with.
type trustdIssuer struct {
	source       netip.Addr
	unit, window time.Duration
}

func newTrustdIssuer(opts TrustdOptions) *trustdIssuer {
	return &trustdIssuer{
		source: opts.SourceAddress,
		unit:   cmp.Or(opts.RetryUnit, DefaultTrustdRetryUnit),
		window: cmp.Or(opts.RetryWindow, DefaultTrustdRetryWindow),
	}
}

// obtain brings spec in line with request through trustd. A failure keeps the current certificate
// with LastError set and requeues the request after the retry window.
func (issuer *trustdIssuer) obtain(
	ctx context.Context, logger *zap.Logger, held *unwritten, id resource.ID, request *pki.CertificateRequestSpec,
	root *pki.RootSecret, pool *pki.AcceptedCA, spec *pki.NodeCertificateSpec, now time.Time,
) error {
	if pool == nil || len(pool.TypedSpec().Certificates) == 0 {
		spec.LastError = "no accepted OS CA in the machine config (machine.ca.crt, machine.acceptedCAs): trustd cannot be verified"

		return nil
	}

	rootsPEM := []byte(strings.Join(pool.TypedSpec().Certificates, ""))

	roots, err := certs.ParseCertificates(rootsPEM)
	if err != nil {
		spec.LastError = fmt.Sprintf("error reading the accepted OS CAs: %v", err)

		return nil
	}

	// The issuing CA is the last accepted one; the key follows its family.
	issuing := roots[len(roots)-1]
	digest := requestDigest(request, certs.Fingerprint(issuing))

	if !due(spec, digest, now) {
		held.forget(id)

		return nil
	}

	if obtained, ok := held.get(id, digest, now); ok {
		*spec = obtained

		return nil
	}

	var token string
	if root != nil && len(root.TypedSpec().Tokens) > 0 {
		token = root.TypedSpec().Tokens[0]
	}

	obtained, err := issuer.roundTrip(ctx, request, token, rootsPEM, roots, issuing.PublicKey)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}

		retryIn := issuer.window * trustdRequeueFactor

		logger.Warn("error obtaining the certificate from trustd", zap.Error(err), zap.Duration("retry_in", retryIn))

		spec.LastError = err.Error()

		// Returned without an error, so that LastError is written.
		return controller.NewRequeueInterval(retryIn)
	}

	obtained.Request = digest
	*spec = obtained

	held.put(id, obtained)

	logger.Info("obtained the certificate from trustd",
		zap.String("issuer_fingerprint", spec.IssuerFingerprint),
		zap.Stringer("renew_at", spec.RenewAt),
	)

	return nil
}

// roundTrip generates a key and CSR and has trustd sign it, retrying within the window.
func (issuer *trustdIssuer) roundTrip(
	ctx context.Context, request *pki.CertificateRequestSpec, token string, rootsPEM []byte, roots []*stdx509.Certificate, caPublic crypto.PublicKey,
) (pki.NodeCertificateSpec, error) {
	if token == "" {
		return pki.NodeCertificateSpec{}, errors.New("no join token: set machine.token")
	}

	if len(request.TrustdEndpoints) == 0 {
		return pki.NodeCertificateSpec{}, errors.New("no trustd endpoint: set cluster.controlPlane.endpoint or pass a trustd endpoint")
	}

	profile, err := profileOf(request)
	if err != nil {
		return pki.NodeCertificateSpec{}, err
	}

	key, keyPEM, err := certs.NewKeyLike(caPublic)
	if err != nil {
		return pki.NodeCertificateSpec{}, fmt.Errorf("error generating the key: %w", err)
	}

	csrDER, err := stdx509.CreateCertificateRequest(cryptorand.Reader, &stdx509.CertificateRequest{
		Subject:     pkix.Name{CommonName: profile.CommonName},
		DNSNames:    profile.DNSNames,
		IPAddresses: profile.IPAddresses,
	}, key)
	if err != nil {
		return pki.NodeCertificateSpec{}, fmt.Errorf("error creating the CSR: %w", err)
	}

	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})

	var caPEM, crtPEM []byte

	err = retry.Exponential(issuer.window, retry.WithUnits(issuer.unit), retry.WithJitter(issuer.unit/5)).RetryWithContext(ctx,
		func(ctx context.Context) error {
			var attemptErr error

			caPEM, crtPEM, attemptErr = trustd.RequestCertificate(ctx, request.TrustdEndpoints, rootsPEM, token, csrPEM, trustd.FromAddress(issuer.source))
			if attemptErr != nil && refused(attemptErr) {
				// Asking again gets the same answer until an input changes.
				return attemptErr
			}

			return retry.ExpectedError(attemptErr)
		})
	if err != nil {
		return pki.NodeCertificateSpec{}, lastAttemptError(err)
	}

	crt, signer, err := checkTrustdCertificate(crtPEM, profile, roots, key)
	if err != nil {
		return pki.NodeCertificateSpec{}, err
	}

	return pki.NodeCertificateSpec{
		Root:              pki.RootOS,
		Certificate:       string(crtPEM),
		Key:               string(keyPEM),
		CABundle:          string(caPEM),
		IssuerFingerprint: certs.Fingerprint(signer),
		RenewAt:           pki.NewTime(renewalTime(crt)),
	}, nil
}

// refused reports an answer of trustd itself that asking again will not change (a bad token,
// names the worker does not own, a malformed request), from every endpoint tried.
func refused(err error) bool {
	var endpoints interface{ Unwrap() []error }
	if errors.As(err, &endpoints) {
		errs := endpoints.Unwrap()

		return len(errs) > 0 && !slices.ContainsFunc(errs, func(err error) bool { return !refused(err) })
	}

	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition:
		return true
	default:
		return false
	}
}

// lastAttemptError is the error of the last attempt of a retry, which says what is wrong now.
func lastAttemptError(err error) error {
	var set *retry.ErrorSet
	if !errors.As(err, &set) {
		return err
	}

	errs := slices.DeleteFunc(set.Unwrap(), func(err error) bool { return retry.IsTimeout(err) })
	if len(errs) == 0 {
		return err
	}

	return errs[len(errs)-1]
}

// checkTrustdCertificate makes sure the certificate is for our key, for the SANs we asked for,
// usable as a server certificate and issued by a CA this node accepts; it returns the issuer.
func checkTrustdCertificate(crtPEM []byte, profile certs.Profile, roots []*stdx509.Certificate, key crypto.Signer) (crt, issuer *stdx509.Certificate, err error) {
	crt, err = certs.ParseCertificate(crtPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("trustd returned an unusable certificate: %w", err)
	}

	if !certs.KeyMatchesCertificate(crt, key) {
		return nil, nil, errors.New("trustd returned a certificate for another key")
	}

	if !slices.Equal(crt.DNSNames, profile.DNSNames) || !slices.EqualFunc(crt.IPAddresses, profile.IPAddresses, net.IP.Equal) {
		return nil, nil, fmt.Errorf("trustd returned a certificate for other SANs (DNS %v, IP %v)", crt.DNSNames, crt.IPAddresses)
	}

	pool := stdx509.NewCertPool()
	for _, root := range roots {
		pool.AddCert(root)
	}

	chains, err := crt.Verify(stdx509.VerifyOptions{Roots: pool, KeyUsages: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}})
	if err != nil {
		return nil, nil, fmt.Errorf("trustd returned a certificate this node does not accept: %w", err)
	}

	// Chains start with crt, then its issuer.
	return crt, chains[0][1], nil
}
