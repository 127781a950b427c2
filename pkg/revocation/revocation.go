// Package revocation owns the list of denied client credentials (machine.revokedCertificates): the
// shape of an entry, its validation, and the check of a verified certificate chain against it.
package revocation

import (
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
)

// Entry denies a client credential: every certificate whose key has Fingerprint, and the
// certificate Serial issued by the CA whose key has Issuer. At least one of the two is set.
type Entry struct {
	// Fingerprint is the hex SHA-256 of the certificate's SubjectPublicKeyInfo: a renewal with
	// the same key is denied too.
	Fingerprint string `yaml:"fingerprint,omitempty" json:"fingerprint,omitempty" protobuf:"1"`
	// Serial is the certificate's serial number in hex, as `openssl x509 -serial` prints it.
	Serial string `yaml:"serial,omitempty" json:"serial,omitempty" protobuf:"2"`
	// Issuer is the fingerprint (as Fingerprint) of the CA that issued Serial.
	Issuer string `yaml:"issuer,omitempty" json:"issuer,omitempty" protobuf:"3"`
	// NotAfter (RFC 3339) is when the denied certificate expires; `revoke --prune` drops the
	// entry after it. Empty means never pruned.
	NotAfter string `yaml:"notAfter,omitempty" json:"notAfter,omitempty" protobuf:"4"`
	// Reason is free text for the operator.
	Reason string `yaml:"reason,omitempty" json:"reason,omitempty" protobuf:"5"`
}

// FieldError is a problem with one field of an entry.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }

func (e *FieldError) Unwrap() error { return e.Err }

// Check reports every problem of the entry, each a *FieldError naming the field (fingerprint,
// serial, issuer, notAfter).
func (e Entry) Check() error {
	var errs []error

	fail := func(field string, err error) { errs = append(errs, &FieldError{Field: field, Err: err}) }

	if e.Fingerprint == "" && e.Serial == "" {
		fail("fingerprint", errors.New("an entry needs a fingerprint, or a serial with its issuer"))
	}

	if e.Fingerprint != "" {
		if err := CheckFingerprint(e.Fingerprint); err != nil {
			fail("fingerprint", err)
		}
	}

	if e.Serial != "" {
		if _, err := ParseSerial(e.Serial); err != nil {
			fail("serial", err)
		}

		if e.Issuer == "" {
			fail("issuer", errors.New("a serial is scoped to its issuer: set the issuing CA's fingerprint (nodepkictl get acceptedcas)"))
		}
	}

	if e.Issuer != "" {
		if err := CheckFingerprint(e.Issuer); err != nil {
			fail("issuer", err)
		}

		if e.Serial == "" {
			fail("serial", errors.New("is missing: an issuer is only meaningful with the serial it issued"))
		}
	}

	if e.NotAfter != "" {
		if _, err := time.Parse(time.RFC3339, e.NotAfter); err != nil {
			fail("notAfter", fmt.Errorf("%q is not an RFC 3339 time (e.g. 2027-01-02T15:04:05Z)", e.NotAfter))
		}
	}

	return errors.Join(errs...)
}

// Expired reports whether the entry has a NotAfter before now.
func (e Entry) Expired(now time.Time) bool {
	if e.NotAfter == "" {
		return false
	}

	t, err := time.Parse(time.RFC3339, e.NotAfter)

	return err == nil && t.Before(now)
}

// CheckFingerprint accepts the hex SHA-256 nodepki prints (64 hex digits; case and colons are
// tolerated).
func CheckFingerprint(s string) error {
	n := NormalizeFingerprint(s)
	if len(n) != 64 {
		return fmt.Errorf("%q is not a SHA-256 fingerprint: want 64 hex digits, the SPKI fingerprint nodepki prints", s)
	}

	if _, err := hex.DecodeString(n); err != nil {
		return fmt.Errorf("%q is not a SHA-256 fingerprint: want 64 hex digits", s)
	}

	return nil
}

// NormalizeFingerprint lowercases s and drops colons.
func NormalizeFingerprint(s string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimSpace(s), ":", ""))
}

// ParseSerial parses a serial in hex as `openssl x509 -serial` prints it (an optional
// "serial=" prefix and colons are tolerated).
func ParseSerial(s string) (*big.Int, error) {
	h := strings.ReplaceAll(strings.TrimPrefix(strings.TrimSpace(s), "serial="), ":", "")
	if h == "" || len(h) > 40 {
		return nil, fmt.Errorf("%q is not a certificate serial: want 1 to 40 hex digits, as `openssl x509 -noout -serial` prints", s)
	}

	if _, err := hex.DecodeString(strings.Repeat("0", len(h)%2) + h); err != nil {
		return nil, fmt.Errorf("%q is not a certificate serial: want hex digits, as `openssl x509 -noout -serial` prints", s)
	}

	n, ok := new(big.Int).SetString(h, 16)
	if !ok {
		return nil, fmt.Errorf("%q is not a certificate serial: want hex digits, as `openssl x509 -noout -serial` prints", s)
	}

	return n, nil
}

// FormatSerial prints a serial as openssl does: upper-case hex with an even number of digits.
func FormatSerial(n *big.Int) string {
	h := strings.ToUpper(n.Text(16))
	if len(h)%2 == 1 {
		h = "0" + h
	}

	return h
}

// ForCertificate is the entry that denies crt (by key, and by serial when issuer is known).
func ForCertificate(crt, issuer *x509.Certificate, reason string) Entry {
	e := Entry{
		Fingerprint: certs.Fingerprint(crt),
		NotAfter:    crt.NotAfter.UTC().Format(time.RFC3339),
		Reason:      reason,
	}

	if issuer != nil {
		e.Serial, e.Issuer = FormatSerial(crt.SerialNumber), certs.Fingerprint(issuer)
	}

	return e
}

// List is a set of entries indexed for the check of a chain. The zero value denies nothing.
type List struct {
	byKey    map[string]Entry
	bySerial map[string]Entry // issuer fingerprint + "/" + serial (canonical hex)
}

// NewList indexes entries; entries that do not pass Check are skipped (the config was validated).
func NewList(entries []Entry) *List {
	l := &List{byKey: map[string]Entry{}, bySerial: map[string]Entry{}}

	for _, e := range entries {
		if e.Check() != nil {
			continue
		}

		if e.Fingerprint != "" {
			l.byKey[NormalizeFingerprint(e.Fingerprint)] = e
		}

		if e.Serial != "" {
			serial, _ := ParseSerial(e.Serial) // validated when the list was built
			l.bySerial[NormalizeFingerprint(e.Issuer)+"/"+serial.Text(16)] = e
		}
	}

	return l
}

// Len is the number of indexed keys and serials.
func (l *List) Len() int {
	if l == nil {
		return 0
	}

	return len(l.byKey) + len(l.bySerial)
}

// Denied checks a verified chain (leaf first, each certificate issued by the next): every
// certificate's key and every (issuer, serial) pair of it. A denied intermediate denies what it
// signed.
func (l *List) Denied(chain []*x509.Certificate) (Entry, bool) {
	if l.Len() == 0 {
		return Entry{}, false
	}

	for i, c := range chain {
		if e, ok := l.byKey[certs.Fingerprint(c)]; ok {
			return e, true
		}

		if i+1 < len(chain) {
			if e, ok := l.bySerial[certs.Fingerprint(chain[i+1])+"/"+c.SerialNumber.Text(16)]; ok {
				return e, true
			}
		}
	}

	return Entry{}, false
}

// RevokedError is the refusal of a denied certificate.
type RevokedError struct {
	Subject string
	Entry   Entry
}

func (e *RevokedError) Error() string {
	msg := fmt.Sprintf("certificate %q has been revoked (machine.revokedCertificates", e.Subject)
	if e.Entry.Fingerprint != "" {
		msg += ", fingerprint " + e.Entry.Fingerprint
	} else {
		msg += ", serial " + e.Entry.Serial
	}

	if e.Entry.Reason != "" {
		msg += ", reason: " + e.Entry.Reason
	}

	return msg + ")"
}

// Same reports whether a and b deny the same credential (same key, same serial of the same
// issuer), whatever their spelling, reason or notAfter.
func Same(a, b Entry) bool {
	return a.key() == b.key()
}

func (e Entry) key() string {
	k := NormalizeFingerprint(e.Fingerprint) + "|" + NormalizeFingerprint(e.Issuer) + "/"

	if serial, err := ParseSerial(e.Serial); err == nil {
		k += serial.Text(16)
	}

	return k
}
