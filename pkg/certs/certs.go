// Package certs owns the certificate primitives every other part of nodepki shares: root CA and
// key generation with Talos's profiles, leaf and client certificate issuance, PEM parsing with
// errors that say what is wrong, and SPKI fingerprints.
package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	stdx509 "crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"

	"github.com/siderolabs/crypto/x509"
)

// Lifetimes, as in Talos.
const (
	CALifetime     = 87600 * time.Hour    // 10 years
	ClientLifetime = 365 * 24 * time.Hour // talosconfig admin certificate
	// Backdate is subtracted from NotBefore so that nodes with slightly skewed clocks accept a new certificate.
	Backdate = time.Minute
)

// Root kinds understood by NewRootCA; they match the pki root IDs.
const (
	RootOS         = "os"
	RootKubernetes = "kubernetes"
	RootEtcd       = "etcd"
	RootAggregator = "aggregator"
)

// NewRootCA generates a self-signed CA for the named root with Talos's profile: the OS CA is Ed25519
// with O=talos, the others ECDSA P-256 (O=kubernetes, O=etcd, aggregator without subject), 10 years.
func NewRootCA(root string) (crtPEM, keyPEM []byte, err error) {
	opts := []x509.Option{x509.NotBefore(time.Now().Add(-Backdate)), x509.NotAfter(time.Now().Add(CALifetime))}

	switch root {
	case RootOS:
		opts = append(opts, x509.Organization("talos"))
	case RootKubernetes:
		opts = append(opts, x509.ECDSA(true), x509.Organization("kubernetes"))
	case RootEtcd:
		opts = append(opts, x509.ECDSA(true), x509.Organization("etcd"))
	case RootAggregator:
		opts = append(opts, x509.ECDSA(true))
	default:
		return nil, nil, fmt.Errorf("unknown root %q: want one of os, kubernetes, etcd, aggregator", root)
	}

	ca, err := x509.NewSelfSignedCertificateAuthority(opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("error generating %s CA: %w", root, err)
	}

	return ca.CrtPEM, ca.KeyPEM, nil
}

// NewServiceAccountKey generates a service-account signing key (ECDSA P-256, SEC1 PEM).
func NewServiceAccountKey() ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("error generating service-account key: %w", err)
	}

	der, err := stdx509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("error encoding service-account key: %w", err)
	}

	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// ParseCertificate parses the first PEM CERTIFICATE block of data.
func ParseCertificate(data []byte) (*stdx509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("not PEM: no PEM block found")
	}

	return parseCertificateBlock(block)
}

func parseCertificateBlock(block *pem.Block) (*stdx509.Certificate, error) {
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("PEM block is %q, want CERTIFICATE", block.Type)
	}

	crt, err := stdx509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a valid certificate: %w", err)
	}

	return crt, nil
}

// ParseCertificates parses every CERTIFICATE block of a PEM bundle; other blocks are an error.
func ParseCertificates(data []byte) ([]*stdx509.Certificate, error) {
	var out []*stdx509.Certificate

	for rest := bytes.TrimSpace(data); len(rest) > 0; rest = bytes.TrimSpace(rest) {
		var block *pem.Block

		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("not PEM: trailing data after the last PEM block")
		}

		crt, err := parseCertificateBlock(block)
		if err != nil {
			return nil, err
		}

		out = append(out, crt)
	}

	if len(out) == 0 {
		return nil, errors.New("not PEM: no certificate found")
	}

	return out, nil
}

// ParsePrivateKey parses a PEM private key in any form Talos writes or reads (SEC1, PKCS#1,
// PKCS#8, and Talos's "ED25519 PRIVATE KEY").
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("not PEM: no PEM block found")
	}

	var (
		key any
		err error
	)

	switch block.Type {
	case "EC PRIVATE KEY":
		key, err = stdx509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = stdx509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY", "ED25519 PRIVATE KEY":
		key, err = stdx509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block is %q, want a private key", block.Type)
	}

	if err != nil {
		return nil, fmt.Errorf("not a valid private key: %w", err)
	}

	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}

	return signer, nil
}

// PublicKeyPEM returns the PKIX PEM public key of a private key.
func PublicKeyPEM(privateKeyPEM []byte) ([]byte, error) {
	key, err := ParsePrivateKey(privateKeyPEM)
	if err != nil {
		return nil, err
	}

	der, err := stdx509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("error encoding public key: %w", err)
	}

	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKey parses a PEM public key, or derives it from a PEM private key.
func ParsePublicKey(data []byte) (crypto.PublicKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("not PEM: no PEM block found")
	}

	if block.Type == "PUBLIC KEY" {
		key, err := stdx509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("not a valid public key: %w", err)
		}

		return key, nil
	}

	signer, err := ParsePrivateKey(data)
	if err != nil {
		return nil, err
	}

	return signer.Public(), nil
}

// KeyMatchesCertificate reports whether key is the private key of crt.
func KeyMatchesCertificate(crt *stdx509.Certificate, key crypto.Signer) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }

	pub, ok := key.Public().(equaler)

	return ok && pub.Equal(crt.PublicKey)
}

// Fingerprint is the hex SHA-256 of a certificate's SubjectPublicKeyInfo.
func Fingerprint(crt *stdx509.Certificate) string {
	return SPKIFingerprint(crt.RawSubjectPublicKeyInfo)
}

// SPKIFingerprint is the hex SHA-256 of a DER SubjectPublicKeyInfo, the fingerprint nodepki shows
// for CAs and keys alike.
func SPKIFingerprint(der []byte) string {
	sum := sha256.Sum256(der)

	return hex.EncodeToString(sum[:])
}

// PublicKeyFingerprint is the hex SHA-256 of a public key's PKIX encoding (same as Fingerprint for its certificate).
func PublicKeyFingerprint(pub crypto.PublicKey) (string, error) {
	der, err := stdx509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("error encoding public key: %w", err)
	}

	return SPKIFingerprint(der), nil
}

// CA is a parsed issuing CA: certificate and matching key.
type CA struct {
	Crt    *stdx509.Certificate
	CrtPEM []byte
	Key    crypto.Signer
	KeyPEM []byte
}

// LoadCA parses and checks an issuing CA: the certificate is a CA and the key is its key.
func LoadCA(crtPEM, keyPEM []byte) (*CA, error) {
	crt, err := ParseCertificate(crtPEM)
	if err != nil {
		return nil, fmt.Errorf("crt: %w", err)
	}

	if !crt.IsCA {
		return nil, errors.New("crt: certificate is not a CA (basic constraints CA:FALSE)")
	}

	key, err := ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}

	if !KeyMatchesCertificate(crt, key) {
		return nil, errors.New("key does not match the certificate")
	}

	return &CA{Crt: crt, CrtPEM: crtPEM, Key: key, KeyPEM: keyPEM}, nil
}

// Profile describes a leaf certificate to issue.
type Profile struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPAddresses  []net.IP
	KeyUsage     stdx509.KeyUsage
	ExtKeyUsage  []stdx509.ExtKeyUsage
	Lifetime     time.Duration
}

// Issue generates a key of the CA's family (Ed25519 for Ed25519, P-256 for ECDSA, RSA for RSA)
// and signs a certificate for it with the profile. NotBefore is backdated by Backdate.
func (ca *CA) Issue(p Profile, now time.Time) (crtPEM, keyPEM []byte, err error) {
	der, keyPEM, err := ca.issue(p, now)
	if err != nil {
		return nil, nil, err
	}

	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// Issued is a certificate Issue would return, with its parsed form.
type Issued struct {
	Crt    *stdx509.Certificate
	CrtPEM []byte
	KeyPEM []byte
}

// IssueParsed is Issue for callers that go on to read the certificate: it parses the DER it
// signed instead of leaving the caller to decode the PEM again.
func (ca *CA) IssueParsed(p Profile, now time.Time) (Issued, error) {
	der, keyPEM, err := ca.issue(p, now)
	if err != nil {
		return Issued{}, err
	}

	crt, err := stdx509.ParseCertificate(der)
	if err != nil {
		return Issued{}, fmt.Errorf("error parsing the issued certificate: %w", err)
	}

	return Issued{Crt: crt, CrtPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: keyPEM}, nil
}

// issue returns the DER of a new certificate and the PEM of its key.
func (ca *CA) issue(p Profile, now time.Time) (der, keyPEM []byte, err error) {
	key, keyPEM, err := NewKeyLike(ca.Crt.PublicKey)
	if err != nil {
		return nil, nil, err
	}

	der, _, err = ca.Sign(key.Public(), p, now)
	if err != nil {
		return nil, nil, err
	}

	return der, keyPEM, nil
}

// SignCSR signs a CSR's public key with the profile after checking the CSR's signature (its proof
// of possession); the profile, not the CSR, decides the subject, SANs and usages, so a requester
// cannot ask for more than the policy grants.
func (ca *CA) SignCSR(csr *stdx509.CertificateRequest, p Profile, now time.Time) ([]byte, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("CSR signature is invalid: %w", err)
	}

	der, _, err := ca.Sign(csr.PublicKey, p, now)
	if err != nil {
		return nil, err
	}

	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Sign returns the DER of a certificate for pub with the profile, and its serial number. The
// caller has established that pub may have it (SignCSR checks the CSR's signature first).
// x509.CreateCertificate checks the signature it made, so the result is known to verify with
// ca.Crt's key.
func (ca *CA) Sign(pub crypto.PublicKey, p Profile, now time.Time) (der []byte, serial *big.Int, err error) {
	serial, err = x509.NewSerialNumber()
	if err != nil {
		return nil, nil, fmt.Errorf("error generating serial number: %w", err)
	}

	template := &stdx509.Certificate{
		SerialNumber: serial,
		Subject:      pkixName(p.CommonName, p.Organization),
		DNSNames:     p.DNSNames,
		IPAddresses:  p.IPAddresses,
		NotBefore:    now.Add(-Backdate),
		NotAfter:     now.Add(p.Lifetime),
		KeyUsage:     p.KeyUsage,
		ExtKeyUsage:  p.ExtKeyUsage,
	}

	der, err = stdx509.CreateCertificate(nil, template, ca.Crt, pub, ca.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("error signing certificate: %w", err)
	}

	return der, serial, nil
}

// ClientProfile is the profile of an API client certificate: O = sorted roles, no CN, EKU client auth only.
func ClientProfile(roles []string, ttl time.Duration) Profile {
	roles = slices.Clone(roles)
	slices.Sort(roles)

	return Profile{
		Organization: slices.Compact(roles),
		KeyUsage:     stdx509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageClientAuth},
		Lifetime:     ttl,
	}
}

// NewKeyLike generates a leaf key of the family of a CA's public key (Ed25519 for Ed25519, P-256
// for ECDSA, RSA-2048 for RSA) and returns it with its PEM encoding, as Issue does.
func NewKeyLike(caPublicKey crypto.PublicKey) (crypto.Signer, []byte, error) {
	var (
		key   crypto.Signer
		block *pem.Block
		err   error
	)

	switch caPublicKey.(type) {
	case ed25519.PublicKey:
		_, key, err = ed25519.GenerateKey(rand.Reader)
		if err == nil {
			block, err = pkcs8Block(key)
		}
	case *ecdsa.PublicKey:
		var k *ecdsa.PrivateKey

		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err == nil {
			key = k

			var der []byte

			der, err = stdx509.MarshalECPrivateKey(k)
			block = &pem.Block{Type: "EC PRIVATE KEY", Bytes: der}
		}
	case *rsa.PublicKey:
		var k *rsa.PrivateKey

		k, err = rsa.GenerateKey(rand.Reader, 2048)
		if err == nil {
			key = k
			block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: stdx509.MarshalPKCS1PrivateKey(k)}
		}
	default:
		return nil, nil, fmt.Errorf("unsupported CA key type %T", caPublicKey)
	}

	if err != nil {
		return nil, nil, fmt.Errorf("error generating key: %w", err)
	}

	return key, pem.EncodeToMemory(block), nil
}

func pkcs8Block(key crypto.Signer) (*pem.Block, error) {
	der, err := stdx509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}

	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}, nil
}
