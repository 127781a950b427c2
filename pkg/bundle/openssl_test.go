package bundle

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/role"
)

// TestOpenSSLAcceptsCertificates has openssl, an independent implementation, verify the OS CA
// and a client certificate issued from it, and read the client certificate's profile.
func TestOpenSSLAcceptsCertificates(t *testing.T) {
	t.Parallel()

	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl is not on PATH")
	}

	b := generated(t)

	crtPEM, keyPEM, err := b.NewClientCertificate([]string{role.Admin}, 24*time.Hour)
	require.NoError(t, err)

	dir := t.TempDir()
	caFile, crtFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	require.NoError(t, os.WriteFile(caFile, b.Certs.OS.Crt, 0o600))
	require.NoError(t, os.WriteFile(crtFile, crtPEM, 0o600))
	require.NoError(t, os.WriteFile(keyFile, keyPEM, 0o600))

	run := func(args ...string) string {
		t.Helper()

		out, err := exec.CommandContext(t.Context(), openssl, args...).CombinedOutput()
		require.NoError(t, err, "openssl %v:\n%s", args, out)

		return string(out)
	}

	assert.Contains(t, run("verify", "-CAfile", caFile, caFile), caFile+": OK")
	assert.Contains(t, run("verify", "-CAfile", caFile, "-purpose", "sslclient", crtFile), crtFile+": OK")

	text := run("x509", "-noout", "-text", "-in", crtFile)
	assert.Regexp(t, regexp.MustCompile(`Subject: ?O ?= ?os:admin\n`), text)
	assert.Contains(t, text, "TLS Web Client Authentication")
	assert.NotContains(t, text, "TLS Web Server Authentication")
	assert.Contains(t, text, "ED25519")
	assert.NotContains(t, text, "CA:TRUE")

	caText := run("x509", "-noout", "-text", "-in", caFile)
	assert.Regexp(t, regexp.MustCompile(`Subject: ?O ?= ?talos\n`), caText)
	assert.Contains(t, caText, "CA:TRUE")

	// The key openssl reads is the certificate's key.
	assert.Equal(t, run("pkey", "-in", keyFile, "-pubout"), run("x509", "-noout", "-pubkey", "-in", crtFile))

	// A certificate from another CA is refused.
	other := generated(t)
	otherCA := filepath.Join(dir, "other-ca.crt")
	require.NoError(t, os.WriteFile(otherCA, other.Certs.OS.Crt, 0o600))

	out, err := exec.CommandContext(t.Context(), openssl, "verify", "-CAfile", otherCA, crtFile).CombinedOutput()
	require.Error(t, err, "verification against the wrong CA must fail:\n%s", out)
}
