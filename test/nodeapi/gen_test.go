package nodeapi_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestGenOpenSSLRecipe runs the documented recipe from docs/getting-started.md with the real
// binaries and openssl: the admin client certificate of the generated talosconfig verifies against
// the OS CA of secrets.yaml and carries O=os:admin and client-auth usage only.
func TestGenOpenSSLRecipe(t *testing.T) {
	t.Parallel()

	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}

	dir := t.TempDir()

	out, err := ctl(t, t.Context(), "gen", "secrets", "-o", filepath.Join(dir, "s.yaml"))
	require.NoError(t, err, out)

	out, err = ctl(t, t.Context(), "gen", "config", "demo", "https://127.0.0.2:6443",
		"--with-secrets", filepath.Join(dir, "s.yaml"), "-o", filepath.Join(dir, "out"))
	require.NoError(t, err, out)

	for _, name := range []string{"s.yaml", "out/controlplane.yaml", "out/worker.yaml", "out/talosconfig"} {
		info, err := os.Stat(filepath.Join(dir, name))
		require.NoError(t, err)
		require.Equal(t, os.FileMode(0o600), info.Mode().Perm(), name)
	}

	script := `set -e
sed -n '/^    os:/,/key:/p' s.yaml | awk '/crt:/{print $2}' | base64 -d > os-ca.crt
awk '/ crt:/{print $2}' out/talosconfig | base64 -d > admin.crt
openssl verify -CAfile os-ca.crt admin.crt
openssl x509 -in admin.crt -noout -text
`
	cmd := exec.CommandContext(t.Context(), "sh", "-c", script)
	cmd.Dir = dir

	output, err := cmd.CombinedOutput()
	require.NoError(t, err, string(output))

	text := string(output)
	require.Contains(t, text, "admin.crt: OK")
	require.Contains(t, text, "O = os:admin")
	require.Contains(t, text, "TLS Web Client Authentication")
	require.NotContains(t, text, "TLS Web Server Authentication")
	require.NotContains(t, text, "CA:TRUE", "the client certificate is not a CA")
}
