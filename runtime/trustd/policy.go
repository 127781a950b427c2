package trustd

import (
	"crypto/ecdsa"
	"crypto/ed25519"
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
)

// parseCSR decodes and verifies a PEM certificate request.
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

	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: signature is invalid: %w", err)
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

	if len(csr.Subject.CommonName) > maxCommonNameLength {
		return certs.Profile{}, fmt.Errorf("csr: common name is %d characters, at most %d are allowed", len(csr.Subject.CommonName), maxCommonNameLength)
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

	if rsaKey, ok := csr.PublicKey.(*rsa.PublicKey); ok && rsaKey.N.BitLen() < minRSABits {
		return fmt.Errorf("csr: RSA key is %d bits, at least %d are required", rsaKey.N.BitLen(), minRSABits)
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
