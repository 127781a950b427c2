package rotate

import (
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// Root names a root of trust rotate-ca rotates; the values are the pki root IDs, except for
// RootJoinToken (jointoken.go).
type Root string

// The roots, in the order rotate-ca handles and prints them.
const (
	RootOS             Root = Root(pki.RootOS)
	RootKubernetes     Root = Root(pki.RootKubernetes)
	RootEtcd           Root = Root(pki.RootEtcd)
	RootAggregator     Root = Root(pki.RootAggregator)
	RootServiceAccount Root = Root(pki.RootServiceAccount)
)

// AllRoots lists every root rotate-ca can rotate, in order.
var AllRoots = []Root{RootOS, RootKubernetes, RootEtcd, RootAggregator, RootServiceAccount, RootJoinToken}

// DefaultRoots are rotated when no root is chosen, as talosctl rotate-ca does (Talos API and
// Kubernetes CAs).
var DefaultRoots = []Root{RootOS, RootKubernetes}

// ParseRoot accepts a root name as the pki IDs spell it.
func ParseRoot(s string) (Root, error) {
	for _, r := range AllRoots {
		if string(r) == s {
			return r, nil
		}
	}

	names := make([]string, 0, len(AllRoots))
	for _, r := range AllRoots {
		names = append(names, string(r))
	}

	return "", fmt.Errorf("unknown root %q: want one of %s", s, strings.Join(names, ", "))
}

// sortRoots orders roots as AllRoots does and drops duplicates.
func sortRoots(roots []Root) []Root {
	out := make([]Root, 0, len(roots))

	for _, r := range AllRoots {
		if slices.Contains(roots, r) {
			out = append(out, r)
		}
	}

	return out
}

// rootFields locates a root in the v1alpha1 document.
type rootFields struct {
	// section is the path of the mapping that holds the issuing and accepted fields.
	section []string
	// issuing is the key of the issuing CA ({crt, key}) or, for keyOnly roots, of the signing key ({key}).
	issuing string
	// accepted is the key of the list of accepted CAs ({crt}) or verification keys ({key}).
	accepted string
	// keyOnly roots (service-account) are a key pair without certificate: entries are {key: PEM}.
	keyOnly bool
}

var fieldsOf = map[Root]rootFields{
	RootOS:             {section: []string{"machine"}, issuing: "ca", accepted: "acceptedCAs"},
	RootKubernetes:     {section: []string{"cluster"}, issuing: "ca", accepted: "acceptedCAs"},
	RootEtcd:           {section: []string{"cluster", "etcd"}, issuing: "ca", accepted: "acceptedCAs"},
	RootAggregator:     {section: []string{"cluster"}, issuing: "aggregatorCA", accepted: "acceptedAggregatorCAs"},
	RootServiceAccount: {section: []string{"cluster"}, issuing: "serviceAccount", accepted: "acceptedServiceAccountKeys", keyOnly: true},
	RootJoinToken:      {section: []string{"machine"}, issuing: "token", accepted: "acceptedTokens"},
}

// issuingPath is the config path of the root's issuing field, for messages.
func (r Root) issuingPath() string {
	f := fieldsOf[r]

	return strings.Join(append(slices.Clone(f.section), f.issuing), ".")
}

// acceptedPath is the config path of the root's accepted list, for messages.
func (r Root) acceptedPath() string {
	f := fieldsOf[r]

	return strings.Join(append(slices.Clone(f.section), f.accepted), ".")
}

// rootConfig is what one node's machine config says about one root.
type rootConfig struct {
	// present is false when the node's config has nothing for the root (e.g. etcd on a worker):
	// such a node takes no part in the root's rotation.
	present bool
	// issuingCrt and issuingKey are the PEM issuing CA (crt empty for keyOnly roots; key empty
	// on nodes that do not issue).
	issuingCrt []byte
	issuingKey []byte
	// issuingFingerprint is the SPKI fingerprint of the issuing CA (or signing key), or the
	// tokenFingerprint of the join token.
	issuingFingerprint string
	accepted           []acceptedEntry
	// issuingToken is machine.token (join-token root only).
	issuingToken string
	// noTrustd is set on a worker for the join-token root: it accepts no token.
	noTrustd bool
}

// acceptedEntry is one element of an accepted list: its PEM exactly as in the config (a patch
// deleting it must name it byte for byte) and the fingerprints of what it holds.
type acceptedEntry struct {
	pem          []byte
	fingerprints []string
}

// accepts reports whether any accepted entry holds the fingerprint.
func (rc rootConfig) accepts(fingerprint string) bool {
	return slices.ContainsFunc(rc.accepted, func(e acceptedEntry) bool { return slices.Contains(e.fingerprints, fingerprint) })
}

// readRoot extracts one root from a machine config document.
func readRoot(doc *machineconfig.Document, root Root) (rootConfig, error) {
	var (
		issuing  *machineconfig.CertificateAndKey
		accepted []*machineconfig.Certificate
	)

	machine := doc.Machine
	if machine == nil {
		machine = &machineconfig.MachineSection{}
	}

	cluster := doc.Cluster
	if cluster == nil {
		cluster = &machineconfig.ClusterSection{}
	}

	switch root {
	case RootOS:
		issuing, accepted = machine.CA, machine.AcceptedCAs
	case RootKubernetes:
		issuing, accepted = cluster.CA, cluster.AcceptedCAs
	case RootEtcd:
		if cluster.Etcd != nil {
			issuing, accepted = cluster.Etcd.CA, cluster.Etcd.AcceptedCAs
		}
	case RootAggregator:
		issuing, accepted = cluster.AggregatorCA, cluster.AcceptedAggregatorCAs
	case RootServiceAccount:
		return readKeyRoot(cluster.ServiceAccount, cluster.AcceptedServiceAccountKeys)
	case RootJoinToken:
		return readTokenRoot(machine), nil
	default:
		return rootConfig{}, fmt.Errorf("unknown root %q", root)
	}

	return readCertificateRoot(root, issuing, accepted)
}

func readCertificateRoot(root Root, issuing *machineconfig.CertificateAndKey, accepted []*machineconfig.Certificate) (rootConfig, error) {
	var rc rootConfig

	for i, entry := range accepted {
		if entry == nil || len(entry.Crt) == 0 {
			continue
		}

		crts, err := certs.ParseCertificates(entry.Crt)
		if err != nil {
			return rootConfig{}, fmt.Errorf("%s[%d].crt: %w", root.acceptedPath(), i, err)
		}

		e := acceptedEntry{pem: entry.Crt}
		for _, crt := range crts {
			e.fingerprints = append(e.fingerprints, certs.Fingerprint(crt))
		}

		rc.accepted = append(rc.accepted, e)
	}

	if issuing == nil || len(issuing.Crt) == 0 {
		if len(rc.accepted) > 0 {
			return rootConfig{}, fmt.Errorf("%s.crt is empty while %s lists CAs: rotate-ca needs the issuing CA certificate on every node; set %s.crt",
				root.issuingPath(), root.acceptedPath(), root.issuingPath())
		}

		return rootConfig{}, nil
	}

	crt, err := certs.ParseCertificate(issuing.Crt)
	if err != nil {
		return rootConfig{}, fmt.Errorf("%s.crt: %w", root.issuingPath(), err)
	}

	rc.present = true
	rc.issuingCrt = issuing.Crt
	rc.issuingKey = issuing.Key
	rc.issuingFingerprint = certs.Fingerprint(crt)

	return rc, nil
}

func readKeyRoot(signing *machineconfig.Key, accepted []*machineconfig.Key) (rootConfig, error) {
	var rc rootConfig

	for i, entry := range accepted {
		if entry == nil || len(entry.Key) == 0 {
			continue
		}

		fingerprint, err := keyFingerprint(entry.Key)
		if err != nil {
			return rootConfig{}, fmt.Errorf("%s[%d].key: %w", RootServiceAccount.acceptedPath(), i, err)
		}

		rc.accepted = append(rc.accepted, acceptedEntry{pem: entry.Key, fingerprints: []string{fingerprint}})
	}

	if signing == nil || len(signing.Key) == 0 {
		// Workers verify no service-account tokens: accepted keys alone are harmless there.
		return rootConfig{}, nil
	}

	fingerprint, err := keyFingerprint(signing.Key)
	if err != nil {
		return rootConfig{}, fmt.Errorf("%s.key: %w", RootServiceAccount.issuingPath(), err)
	}

	rc.present = true
	rc.issuingKey = signing.Key
	rc.issuingFingerprint = fingerprint

	return rc, nil
}

// keyFingerprint is the fingerprint the AcceptedCAs resource reports for a PEM public or private key.
func keyFingerprint(keyPEM []byte) (string, error) {
	pub, err := certs.ParsePublicKey(keyPEM)
	if err != nil {
		return "", err
	}

	return certs.PublicKeyFingerprint(pub)
}

// shortFingerprint abbreviates a fingerprint for progress lines.
func shortFingerprint(fingerprint string) string {
	if len(fingerprint) > 12 {
		return fingerprint[:12]
	}

	return fingerprint
}

// publicKeyPEM returns the PEM public key of a PEM private key; a PEM public key is returned as is.
func publicKeyPEM(keyPEM []byte) ([]byte, error) {
	if len(keyPEM) == 0 {
		return nil, errors.New("key is empty")
	}

	if block, _ := pem.Decode(keyPEM); block != nil && block.Type == "PUBLIC KEY" {
		return keyPEM, nil
	}

	return certs.PublicKeyPEM(keyPEM)
}
