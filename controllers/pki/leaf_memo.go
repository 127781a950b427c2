package pki

import (
	"bytes"
	"crypto/sha256"
	stdx509 "crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"slices"
	"sync"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
)

// Every leaf the node issues or obtains is read again right away by CertificateStatusesController:
// parsed from its PEM and verified against its root's trust pool. The controller that produced
// the leaf has just done both (issuance checks the signature it made; a trustd answer is verified
// on receipt), so it leaves the results here. Both memos are facts about bytes, not about state,
// so they are shared by every controller of the process, and bounded: a node has about ten
// leaves, and a miss only costs the work the memo saves.
const (
	parsedLeavesCapacity       = 128
	verifiedSignaturesCapacity = 512
)

var (
	// parsedLeaves maps a certificate PEM to the certificate parsed from it; entries are shared, never modify them.
	parsedLeaves = newBoundedMemo[string, *stdx509.Certificate](parsedLeavesCapacity)
	// verifiedSignatures holds the (certificate, signer key) pairs whose signature is known to verify.
	verifiedSignatures = newBoundedMemo[signaturePair, struct{}](verifiedSignaturesCapacity)
)

// signaturePair names a certificate (SHA-256 of its DER) and a public key (SHA-256 of its
// SubjectPublicKeyInfo). A signature depends on nothing else, so a pair checked once holds
// whichever certificate of that key it is checked with; what the CA certificate itself must
// satisfy is checked by signedByAcceptedCA on every use.
type signaturePair struct {
	certificate, signerKey [sha256.Size]byte
}

func newSignaturePair(crt, signer *stdx509.Certificate) signaturePair {
	return signaturePair{certificate: sha256.Sum256(crt.Raw), signerKey: sha256.Sum256(signer.RawSubjectPublicKeyInfo)}
}

// rememberLeaf records a leaf its controller has just made sure is signed by signer's key: its
// parsed form, and that its signature verifies. Issuance makes sure: x509.CreateCertificate
// refuses a key that is not the CA certificate's and checks the signature it made. A leaf
// obtained from elsewhere must have been verified against signer.
func rememberLeaf(crtPEM string, crt, signer *stdx509.Certificate) {
	parsedLeaves.put(crtPEM, crt)
	rememberSignature(crt, signer)
}

// rememberSignature records that crt's signature verifies with signer's key: signer's key has just
// made it, or x509 has just verified a chain from crt to signer. Algorithms x509 verification
// refuses are never recorded, so a pair in the memo is one x509 would accept.
func rememberSignature(crt, signer *stdx509.Certificate) {
	if insecureSignatureAlgorithm(crt.SignatureAlgorithm) {
		return
	}

	verifiedSignatures.put(newSignaturePair(crt, signer), struct{}{})
}

// parseLeaf parses a certificate PEM, or returns the certificate a controller parsed it into before.
func parseLeaf(crtPEM string) (*stdx509.Certificate, error) {
	if crt, ok := parsedLeaves.get(crtPEM); ok {
		return crt, nil
	}

	crt, err := certs.ParseCertificate([]byte(crtPEM))
	if err != nil {
		return nil, err
	}

	parsedLeaves.put(crtPEM, crt)

	return crt, nil
}

// signedByAcceptedCA returns the CA of cas that x509.Verify would build the chain leaf -> CA with
// at the time at, when the signature of that pair is in verifiedSignatures; ok is false when it
// cannot answer and the caller must verify. It applies the checks of x509 path building other
// than the signature: the CA's subject is the leaf's issuer, the CA is valid at at and may sign
// certificates, neither certificate has an extension x509 does not handle. Chains where
// certificate policies or name constraints are involved are left to x509.
func signedByAcceptedCA(leaf *stdx509.Certificate, cas []*stdx509.Certificate, at time.Time) (*stdx509.Certificate, bool) {
	if !plainChainCertificate(leaf) {
		return nil, false
	}

	leafSum := sha256.Sum256(leaf.Raw)

	for _, ca := range cas {
		if bytes.Equal(ca.Raw, leaf.Raw) {
			// x509 treats a leaf that is itself in the pool as a chain of one.
			return nil, false
		}
	}

	for _, ca := range cas {
		if _, ok := verifiedSignatures.get(signaturePair{certificate: leafSum, signerKey: sha256.Sum256(ca.RawSubjectPublicKeyInfo)}); !ok {
			continue
		}

		if plainChainCertificate(ca) && !hasExtension(ca, oidNameConstraints) && mayIssue(leaf, ca, at) {
			return ca, true
		}
	}

	return nil, false
}

// mayIssue is what x509 path building requires of a root CA besides the signature (CheckSignatureFrom
// and isValid for a chain of two).
func mayIssue(leaf, ca *stdx509.Certificate, at time.Time) bool {
	switch {
	case ca.PublicKey == nil || ca.PublicKeyAlgorithm == stdx509.UnknownPublicKeyAlgorithm:
		return false
	case ca.Version == 3 && !ca.BasicConstraintsValid, ca.BasicConstraintsValid && !ca.IsCA:
		return false
	case ca.KeyUsage != 0 && ca.KeyUsage&stdx509.KeyUsageCertSign == 0:
		return false
	case !bytes.Equal(leaf.RawIssuer, ca.RawSubject):
		return false
	default:
		return !at.Before(ca.NotBefore) && !at.After(ca.NotAfter)
	}
}

// Extensions whose presence hands verification back to x509.
var (
	oidNameConstraints     = asn1.ObjectIdentifier{2, 5, 29, 30}
	oidCertificatePolicies = asn1.ObjectIdentifier{2, 5, 29, 32}
	oidPolicyMappings      = asn1.ObjectIdentifier{2, 5, 29, 33}
	oidPolicyConstraints   = asn1.ObjectIdentifier{2, 5, 29, 36}
	oidInhibitAnyPolicy    = asn1.ObjectIdentifier{2, 5, 29, 54}
	policyExtensions       = []asn1.ObjectIdentifier{oidCertificatePolicies, oidPolicyMappings, oidPolicyConstraints, oidInhibitAnyPolicy}
	insecureSignatureAlgos = []stdx509.SignatureAlgorithm{stdx509.MD2WithRSA, stdx509.MD5WithRSA, stdx509.SHA1WithRSA, stdx509.DSAWithSHA1, stdx509.ECDSAWithSHA1}
)

// plainChainCertificate reports whether crt has no unhandled critical extension and no policy
// extension, the parts of x509 verification the memo does not reproduce.
func plainChainCertificate(crt *stdx509.Certificate) bool {
	if len(crt.UnhandledCriticalExtensions) > 0 {
		return false
	}

	return !slices.ContainsFunc(policyExtensions, func(oid asn1.ObjectIdentifier) bool { return hasExtension(crt, oid) })
}

func hasExtension(crt *stdx509.Certificate, oid asn1.ObjectIdentifier) bool {
	return slices.ContainsFunc(crt.Extensions, func(ext pkix.Extension) bool { return ext.Id.Equal(oid) })
}

func insecureSignatureAlgorithm(algo stdx509.SignatureAlgorithm) bool {
	return slices.Contains(insecureSignatureAlgos, algo)
}

// boundedMemo is a concurrency-safe map that forgets its oldest entries beyond its capacity.
type boundedMemo[K comparable, V any] struct {
	mu       sync.Mutex
	entries  map[K]V
	order    []K
	next     int
	capacity int
}

func newBoundedMemo[K comparable, V any](capacity int) *boundedMemo[K, V] {
	return &boundedMemo[K, V]{entries: make(map[K]V, capacity), capacity: capacity}
}

func (m *boundedMemo[K, V]) get(key K) (V, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()

	v, ok := m.entries[key]

	return v, ok
}

func (m *boundedMemo[K, V]) has(key K) bool {
	_, ok := m.get(key)

	return ok
}

func (m *boundedMemo[K, V]) put(key K, value V) {
	m.mu.Lock()
	defer m.mu.Unlock()

	if _, ok := m.entries[key]; ok {
		m.entries[key] = value

		return
	}

	if len(m.order) < m.capacity {
		m.order = append(m.order, key)
	} else {
		delete(m.entries, m.order[m.next])
		m.order[m.next] = key
		m.next = (m.next + 1) % m.capacity
	}

	m.entries[key] = value
}
