// Package audit owns a node's audit log: the security-relevant events of the node (config applied
// or patched, client credentials and kubeconfigs issued, certificates signed by trustd, refused
// calls, revocations and root changes), their JSON-line format, and the file they are appended
// to, <state-dir>/audit.log (0600, synced per event, size-rotated into audit.log.1..N).
//
// An event never holds secret material: no PEM, no key, no token. Config changes are recorded as
// the paths of the fields that changed, certificates as subject, serial and fingerprints.
//
// Refusals are aggregated per peer and minute (refusals.go) so that a flood of bad calls cannot
// fill the disk. A reader skips, with a warning, a line that does not parse: the last line of a
// file can be torn by a crash (kill -9) and is never a reason to fail.
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Event types.
const (
	// TypeConfigApplied: a whole machine config document replaced the node's config.
	TypeConfigApplied = "config.applied"
	// TypeConfigPatched: patches changed the node's config.
	TypeConfigPatched = "config.patched"
	// TypeClientIssued: a client configuration (talosconfig, `config new`) was issued.
	TypeClientIssued = "client.issued"
	// TypeClientRenewed: a client certificate was renewed (`config renew`).
	TypeClientRenewed = "client.renewed"
	// TypeKubeconfigIssued: an admin kubeconfig was issued.
	TypeKubeconfigIssued = "kubeconfig.issued"
	// TypeTrustdSigned: trustd signed a worker's node API certificate.
	TypeTrustdSigned = "trustd.signed"
	// TypeRefused: calls of one peer were refused (see Refusal).
	TypeRefused = "refused"
	// TypeRevocationAdded and TypeRevocationRemoved: entries of machine.revokedCertificates came
	// or went with a config change.
	TypeRevocationAdded   = "revocation.added"
	TypeRevocationRemoved = "revocation.removed"
	// TypeRotationStep: a config change touched a root (its issuing CA or key, its accepted CAs or
	// keys, or the join tokens): what a node sees of a rotate-ca step.
	TypeRotationStep = "rotation.step"
)

// Event is one line of the audit log. Fields that do not apply to its type are omitted.
type Event struct {
	// Time is when the node recorded the event (UTC).
	Time time.Time `json:"time"`
	// Type is one of the Type constants.
	Type string `json:"type"`
	// Node is the address the node knows itself by.
	Node string `json:"node,omitempty"`
	// Caller is who made the call that caused the event.
	Caller *Caller `json:"caller,omitempty"`
	// Changed lists the paths of the config fields a config change touched (machine.certSANs),
	// never their values.
	Changed []string `json:"changed,omitempty"`
	// Certificate is what was issued or signed.
	Certificate *Certificate `json:"certificate,omitempty"`
	// Revocations are the entries added or removed.
	Revocations []Revocation `json:"revocations,omitempty"`
	// Roots are the root changes of a rotation step.
	Roots []RootChange `json:"roots,omitempty"`
	// Refusal describes refused calls.
	Refusal *Refusal `json:"refusal,omitempty"`
}

// Caller identifies the client of a call by its certificate.
type Caller struct {
	// Subject is the client certificate's subject (O=os:admin).
	Subject string `json:"subject,omitempty"`
	// Serial is its serial in hex, as `openssl x509 -serial` prints it.
	Serial string `json:"serial,omitempty"`
	// Roles are the roles the call ran with.
	Roles []string `json:"roles,omitempty"`
	// Address is the caller's address (host:port) as the first node it reached saw it.
	Address string `json:"address,omitempty"`
	// ForwardedBy is the subject of the control plane that forwarded the call, when it was.
	ForwardedBy string `json:"forwardedBy,omitempty"`
}

// Certificate describes an issued certificate.
type Certificate struct {
	Subject     string   `json:"subject,omitempty"`
	CommonName  string   `json:"commonName,omitempty"`
	Roles       []string `json:"roles,omitempty"`
	DNSNames    []string `json:"dnsNames,omitempty"`
	IPAddresses []string `json:"ipAddresses,omitempty"`
	// Serial is in hex, as `openssl x509 -serial` prints it (and `revoke --serial` takes it).
	Serial string `json:"serial,omitempty"`
	// Fingerprint is the SHA-256 of the certificate's public key (what `revoke --fingerprint` takes).
	Fingerprint string `json:"fingerprint,omitempty"`
	// Issuer is the fingerprint of the issuing CA (what `revoke --issuer` takes).
	Issuer   string    `json:"issuer,omitempty"`
	NotAfter time.Time `json:"notAfter,omitzero"`
	// Lifetime is the requested lifetime (Go duration: 8760h0m0s).
	Lifetime string `json:"lifetime,omitempty"`
	// Requester is the address a trustd request came from.
	Requester string `json:"requester,omitempty"`
}

// Revocation is an entry of machine.revokedCertificates (all of it is public).
type Revocation struct {
	Fingerprint string `json:"fingerprint,omitempty"`
	Serial      string `json:"serial,omitempty"`
	Issuer      string `json:"issuer,omitempty"`
	NotAfter    string `json:"notAfter,omitempty"`
	Reason      string `json:"reason,omitempty"`
}

// RootChange is what a config change did to one root.
type RootChange struct {
	// Root is os, kubernetes, etcd, aggregator, service-account or join-token.
	Root string `json:"root"`
	// Step is issuing-changed, accepted-added or accepted-removed.
	Step string `json:"step"`
	// From and To are the fingerprints of the old and new issuing CA or key (issuing-changed).
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
	// Fingerprints are the accepted CAs or keys added or removed; tokens have none, only Count.
	Fingerprints []string `json:"fingerprints,omitempty"`
	Count        int      `json:"count,omitempty"`
}

// Refusal is a count of refused calls from one peer within one minute.
type Refusal struct {
	// Service is api (the node API) or trustd.
	Service string `json:"service"`
	// Peer is the refused client's IP address.
	Peer string `json:"peer"`
	// Count is how many refusals this line stands for: 1 for the first refusal of the peer in
	// a minute (written at once), the rest of that minute in one more line at its end.
	Count int `json:"count"`
	// Method and Reason are those of the first refusal the line stands for.
	Method string `json:"method,omitempty"`
	Reason string `json:"reason,omitempty"`
	// Window is the start of the minute.
	Window time.Time `json:"window"`
}

// MaxLineBytes bounds one line of the log: events are far smaller; a longer line is not one.
const MaxLineBytes = 64 << 10

// Marshal encodes an event as one line (without the newline).
func Marshal(e Event) ([]byte, error) {
	data, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("error encoding audit event %s: %w", e.Type, err)
	}

	if len(data) > MaxLineBytes {
		return nil, fmt.Errorf("audit event %s is %d bytes, more than %d", e.Type, len(data), MaxLineBytes)
	}

	return data, nil
}

// ParseLine decodes one line of the log (without its newline). Unknown fields are ignored, so
// that an older reader reads a newer log; a line that is not one JSON object with a time and a
// type is not an event.
func ParseLine(line []byte) (Event, error) {
	var e Event

	if len(line) > MaxLineBytes {
		return Event{}, fmt.Errorf("the line is %d bytes, more than the %d of an event", len(line), MaxLineBytes)
	}

	// Unmarshal refuses anything after the object, which a torn-then-appended line would have.
	if err := json.Unmarshal(line, &e); err != nil {
		return Event{}, fmt.Errorf("not a complete event: %w", err)
	}

	if e.Type == "" {
		return Event{}, errors.New("not an event: no type")
	}

	if e.Time.IsZero() {
		return Event{}, errors.New("not an event: no time")
	}

	return e, nil
}
