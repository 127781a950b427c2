package pki

import (
	"crypto/sha256"
	stdx509 "crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// Renewal timing: a certificate is renewed at 2/3 of its life, earlier by up to 5% of its life so
// that certificates issued together are not all renewed in the same instant.
const (
	renewalNumerator   = 2
	renewalDenominator = 3
	maxJitterPercent   = 5
	// expiringPercent is the last part of a certificate's life in which it is reported as expiring.
	expiringPercent = 10
)

// lifetimeOf is when a certificate was issued and for how long. NotBefore is backdated by
// certs.Backdate at issuance, which would otherwise dominate short test lifetimes.
func lifetimeOf(crt *stdx509.Certificate) (issued time.Time, lifetime time.Duration) {
	issued = crt.NotBefore.Add(certs.Backdate)
	if !issued.Before(crt.NotAfter) {
		issued = crt.NotBefore
	}

	return issued, crt.NotAfter.Sub(issued)
}

// renewalTime is when crt is due for renewal. The jitter is derived from the serial number, so
// the same certificate always gets the same time and recomputing it never rewrites a spec.
func renewalTime(crt *stdx509.Certificate) time.Time {
	issued, lifetime := lifetimeOf(crt)

	sum := sha256.Sum256(crt.SerialNumber.Bytes())
	fraction := float64(binary.BigEndian.Uint64(sum[:8])) / (1 << 64)
	jitter := time.Duration(fraction * float64(lifetime) * maxJitterPercent / 100)

	// Specs carry RenewAt with a resolution of one second; rounding here keeps the timer and the
	// spec in agreement.
	return issued.Add(lifetime*renewalNumerator/renewalDenominator - jitter).Round(time.Second)
}

// issuanceTime is now rounded up to a whole second. Certificate times have a resolution of one
// second, so issuing on a whole second makes the lifetime read back from the certificate exact.
func issuanceTime(now time.Time) time.Time {
	if rounded := now.Truncate(time.Second); rounded.Before(now) {
		return rounded.Add(time.Second)
	}

	return now
}

// expiringTime is when crt enters the last expiringPercent of its life.
func expiringTime(crt *stdx509.Certificate) time.Time {
	_, lifetime := lifetimeOf(crt)

	return crt.NotAfter.Add(-lifetime * expiringPercent / 100)
}

// requestDigest identifies what a certificate is issued for: the request (without how it is
// obtained) and the issuing CA. A certificate whose digest differs from the current one must be
// reissued.
func requestDigest(req *pki.CertificateRequestSpec, issuerFingerprint string) string {
	// Marshalling a struct of plain fields cannot fail, and its field order is fixed.
	data, _ := json.Marshal(struct { //nolint:errchkjson // see above
		CommonName   string
		Organization []string
		DNSNames     []string
		IPAddresses  []netip.Addr
		KeyUsage     []string
		ExtKeyUsage  []string
		Lifetime     time.Duration
		Issuer       string
	}{
		req.CommonName, req.Organization, req.DNSNames, req.IPAddresses, req.KeyUsage, req.ExtKeyUsage, req.Lifetime,
		issuerFingerprint,
	})

	sum := sha256.Sum256(data)

	return hex.EncodeToString(sum[:])
}
