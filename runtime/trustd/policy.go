package trustd

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/nodepki/nodepki/pkg/certs"
)

// Limits of what a CSR may ask for.
const (
	maxCommonNameLength = 64 // ub-common-name (RFC 5280)
	minRSABits          = 2048
	maxRSABits          = 4096
)

// parseCSR decodes a PEM certificate request; its signature is checked by serverProfile, once the
// key is known to be of an accepted family and size (verifying a huge RSA key costs the server).
func parseCSR(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil {
		return nil, errors.New("csr: not PEM: no PEM block found")
	}

	if block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("csr: PEM block is %q, want CERTIFICATE REQUEST", block.Type)
	}

	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: not a valid certificate request: %w", err)
	}

	return csr, nil
}

// serverProfile applies the signing policy to a verified CSR and returns the profile to sign it with:
// the CSR's CN and validated DNS/IP SANs, no Organization (so the certificate carries no role), EKU
// server auth only, CertificateLifetime (the server may shorten it). It refuses a key of another family than the CA's, an empty or wildcard SAN
// set, and SAN kinds a node API certificate never needs.
func serverProfile(csr *x509.CertificateRequest, ca *certs.CA) (certs.Profile, error) {
	if err := checkKeyFamily(csr, ca); err != nil {
		return certs.Profile{}, err
	}

	if err := checkSignature(csr); err != nil {
		return certs.Profile{}, err
	}

	if len(csr.Subject.CommonName) > maxCommonNameLength {
		return certs.Profile{}, fmt.Errorf("csr: common name is %d characters, at most %d are allowed", len(csr.Subject.CommonName), maxCommonNameLength)
	}

	if err := certs.CheckDNSName(csr.Subject.CommonName); err != nil {
		return certs.Profile{}, fmt.Errorf("csr: common name %q must be the node's host name: %w", csr.Subject.CommonName, err)
	}

	if len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return certs.Profile{}, errors.New("csr: email and URI SANs are not allowed: request DNS names and IP addresses only")
	}

	sans := len(csr.DNSNames) + len(csr.IPAddresses)

	switch {
	case sans == 0:
		return certs.Profile{}, errors.New("csr: no SANs: request at least one DNS name or IP address of the node")
	case sans > certs.MaxSANs:
		return certs.Profile{}, fmt.Errorf("csr: %d SANs requested, at most %d are allowed", sans, certs.MaxSANs)
	}

	for _, name := range csr.DNSNames {
		if err := certs.CheckDNSName(name); err != nil {
			return certs.Profile{}, fmt.Errorf("csr: DNS SAN %q: %w", name, err)
		}
	}

	for _, ip := range csr.IPAddresses {
		if err := certs.CheckIPSAN(ip); err != nil {
			return certs.Profile{}, fmt.Errorf("csr: IP SAN %w", err)
		}
	}

	return certs.Profile{
		CommonName:  csr.Subject.CommonName,
		DNSNames:    csr.DNSNames,
		IPAddresses: csr.IPAddresses,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		Lifetime:    CertificateLifetime,
	}, nil
}

// checkKeyFamily requires the CSR key to be of the issuing CA's family (and RSA keys to be large enough).
func checkKeyFamily(csr *x509.CertificateRequest, ca *certs.CA) error {
	want := keyFamily(ca.Key.Public())
	got := keyFamily(csr.PublicKey)

	if got != want {
		return fmt.Errorf("csr: key type is %s but the OS CA is %s: generate an %s key", got, want, want)
	}

	switch key := csr.PublicKey.(type) {
	case *rsa.PublicKey:
		if bits := key.N.BitLen(); bits < minRSABits || bits > maxRSABits {
			return fmt.Errorf("csr: RSA key is %d bits, %d to %d are accepted", bits, minRSABits, maxRSABits)
		}
	case *ecdsa.PublicKey:
		if key.Curve != elliptic.P256() && key.Curve != elliptic.P384() && key.Curve != elliptic.P521() {
			return fmt.Errorf("csr: ECDSA curve %s is not accepted: use P-256, P-384 or P-521", key.Curve.Params().Name)
		}
	}

	return nil
}

// checkSignature verifies the CSR's self-signature, refusing SHA-1 (and older) digests, which the
// standard library still accepts on certificate requests.
func checkSignature(csr *x509.CertificateRequest) error {
	switch csr.SignatureAlgorithm {
	case x509.SHA1WithRSA, x509.ECDSAWithSHA1, x509.DSAWithSHA1, x509.MD5WithRSA, x509.MD2WithRSA:
		return fmt.Errorf("csr: signature algorithm %s is not accepted: sign with SHA-256 or better", csr.SignatureAlgorithm)
	default:
		// SHA-256 and better: CheckSignature below decides.
	}

	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("csr: signature is invalid: %w", err)
	}

	return nil
}

func keyFamily(pub any) string {
	switch pub.(type) {
	case ed25519.PublicKey:
		return "Ed25519"
	case *ecdsa.PublicKey:
		return "ECDSA"
	case *rsa.PublicKey:
		return "RSA"
	default:
		return fmt.Sprintf("unsupported (%T)", pub)
	}
}
