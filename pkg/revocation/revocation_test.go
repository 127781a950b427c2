package revocation_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/revocation"
)

func newCert(t *testing.T, serial int64, key *ecdsa.PrivateKey, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, isCA bool) *x509.Certificate {
	t.Helper()

	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		Subject:               pkix.Name{CommonName: "c", Organization: []string{"os:reader"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
	}

	if parent == nil {
		parent, parentKey = tmpl, key
	}

	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	require.NoError(t, err)

	c, err := x509.ParseCertificate(der)
	require.NoError(t, err)

	return c
}

func genKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()

	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)

	return k
}

func TestDenied(t *testing.T) {
	caKey, otherCAKey, leafKey := genKey(t), genKey(t), genKey(t)
	ca := newCert(t, 1, caKey, nil, nil, true)
	otherCA := newCert(t, 2, otherCAKey, nil, nil, true)
	leaf := newCert(t, 0x0abc, leafKey, ca, caKey, false)
	renewed := newCert(t, 0x0abd, leafKey, ca, caKey, false)
	otherLeaf := newCert(t, 0x0abc, genKey(t), otherCA, otherCAKey, false)
	sameSerialSameCA := newCert(t, 0x0abc, genKey(t), ca, caKey, false)

	byKey := revocation.Entry{Fingerprint: certs.Fingerprint(leaf)}
	bySerial := revocation.Entry{Serial: "0ABC", Issuer: certs.Fingerprint(ca)}

	tests := []struct {
		name    string
		entries []revocation.Entry
		chain   []*x509.Certificate
		denied  bool
	}{
		{"empty list", nil, []*x509.Certificate{leaf, ca}, false},
		{"by key", []revocation.Entry{byKey}, []*x509.Certificate{leaf, ca}, true},
		{"by key denies a renewal with the same key", []revocation.Entry{byKey}, []*x509.Certificate{renewed, ca}, true},
		{"by key leaves another key alone", []revocation.Entry{byKey}, []*x509.Certificate{sameSerialSameCA, ca}, false},
		{"by serial", []revocation.Entry{bySerial}, []*x509.Certificate{sameSerialSameCA, ca}, true},
		{"by serial is scoped to its issuer", []revocation.Entry{bySerial}, []*x509.Certificate{otherLeaf, otherCA}, false},
		{"by serial leaves the renewal alone", []revocation.Entry{bySerial}, []*x509.Certificate{renewed, ca}, false},
		{"upper-case fingerprint with colons", []revocation.Entry{{Fingerprint: "  " + upperColons(certs.Fingerprint(leaf))}}, []*x509.Certificate{leaf, ca}, true},
		{"a CA's key denies what it signed", []revocation.Entry{{Fingerprint: certs.Fingerprint(ca)}}, []*x509.Certificate{leaf, ca}, true},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, denied := revocation.NewList(tt.entries).Denied(tt.chain)
			assert.Equal(t, tt.denied, denied)
		})
	}
}

func upperColons(s string) string {
	out := ""

	for i := 0; i < len(s); i += 2 {
		if i > 0 {
			out += ":"
		}

		out += s[i : i+2]
	}

	return out
}

func TestSerial(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "0ABC", want: 0xabc},
		{in: "serial=0ABC", want: 0xabc},
		{in: "0a:bc", want: 0xabc},
		{in: "XYZ", wantErr: true},
		{in: "", wantErr: true},
		{in: "-1", wantErr: true},
	}

	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			n, err := revocation.ParseSerial(tt.in)
			if tt.wantErr {
				require.Error(t, err)

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tt.want, n.Int64())
		})
	}

	assert.Equal(t, "0ABC", revocation.FormatSerial(big.NewInt(0xabc)))
	assert.Equal(t, "10", revocation.FormatSerial(big.NewInt(16)))
}

// FuzzEntry: any entry is either refused by Check or indexed, never a panic; a valid serial
// prints back to the same number.
func FuzzEntry(f *testing.F) {
	f.Add("ab", "0A", "cd", "2027-01-01T00:00:00Z")
	f.Add(strings.Repeat("a", 64), "serial=0a:bc", strings.Repeat("B", 64), "")
	f.Fuzz(func(t *testing.T, fp, serial, issuer, notAfter string) {
		e := revocation.Entry{Fingerprint: fp, Serial: serial, Issuer: issuer, NotAfter: notAfter}
		if e.Check() == nil {
			assert.Positive(t, revocation.NewList([]revocation.Entry{e}).Len())
			assert.True(t, revocation.Same(e, e))
		}

		if n, err := revocation.ParseSerial(serial); err == nil {
			again, err := revocation.ParseSerial(revocation.FormatSerial(n))
			require.NoError(t, err)
			assert.Zero(t, n.Cmp(again))
		}
	})
}
