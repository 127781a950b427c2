package trustd_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/revocation"
	trustdclient "github.com/nodepki/nodepki/pkg/trustd"
	"github.com/nodepki/nodepki/runtime/trustd"
)

// TestAuditSignedAndRefused: a signed certificate is recorded with the requester, names and
// serial; requests with a bad token are counted as refusals; neither the token nor the CSR is in
// the log.
func TestAuditSignedAndRefused(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	log, err := audit.Open(audit.Options{Dir: dir, Node: "127.0.0.1"})
	require.NoError(t, err)

	t.Cleanup(func() { log.Close() })

	cp := newControlPlane(t, certs.RootOS)
	srv, err := trustd.New(trustd.Options{State: cp.state, Logger: zaptest.NewLogger(t), Audit: log})
	require.NoError(t, err)

	addr := serve(t, srv)

	csr := makeCSR(t, csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}, ips: []string{"10.5.0.3"}})
	_, crtPEM, err := trustdclient.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), machineToken, csr)
	require.NoError(t, err)

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	const badToken = "badbad.0123456789abcdef"

	for range 3 {
		_, _, err = trustdclient.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), badToken, csr)
		require.Error(t, err)
	}

	var events []audit.Event

	require.NoError(t, log.Stream(nil, time.Time{}, false, func(line audit.Line) error {
		require.Empty(t, line.Warning)
		events = append(events, line.Event)

		return nil
	}))
	require.Len(t, events, 2, "the signing, and the first refusal of the minute")

	signed := events[0]
	assert.Equal(t, audit.TypeTrustdSigned, signed.Type)
	assert.Equal(t, "127.0.0.1", signed.Certificate.Requester)
	assert.Equal(t, "worker-1", signed.Certificate.CommonName)
	assert.Equal(t, []string{"worker-1"}, signed.Certificate.DNSNames)
	assert.Equal(t, []string{"10.5.0.3"}, signed.Certificate.IPAddresses)
	assert.Equal(t, revocation.FormatSerial(crt.SerialNumber), signed.Certificate.Serial)
	assert.Equal(t, certs.Fingerprint(crt), signed.Certificate.Fingerprint)
	assert.Equal(t, crt.NotAfter.UTC().Truncate(time.Second), signed.Certificate.NotAfter.Truncate(time.Second))

	refused := events[1]
	assert.Equal(t, audit.TypeRefused, refused.Type)
	assert.Equal(t, audit.Refusal{
		Service: audit.ServiceTrustd, Peer: "127.0.0.1", Count: 1, Method: "/nodepki.trustd.v1.TrustdService/Certificate",
		Reason: "invalid join token", Window: refused.Refusal.Window,
	}, *refused.Refusal)

	require.NoError(t, log.Close())

	data, err := os.ReadFile(filepath.Join(dir, audit.FileName))
	require.NoError(t, err)
	assert.Equal(t, 3, bytes.Count(data, []byte("\n")), "closing writes the count of the other two refusals")

	for _, secret := range []string{machineToken, badToken, "-----BEGIN"} {
		assert.NotContains(t, string(data), secret)
	}
}
