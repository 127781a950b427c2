package nodeapi_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/role"
)

// ctlEnv runs nodepkictl with extra environment variables and returns stdout and stderr apart.
func ctlEnv(t *testing.T, env []string, args ...string) (stdout, stderr string, err error) {
	t.Helper()

	cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, "nodepkictl"), args...)
	cmd.Env = append(slices.Clone(os.Environ()), env...)

	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut

	err = cmd.Run()

	return out.String(), errOut.String(), err
}

// clientCert is the client certificate of the current context of the talosconfig at path.
func clientCert(t *testing.T, path string) (*clientconfig.Context, []byte) {
	t.Helper()

	cfg, err := clientconfig.Open(path)
	require.NoError(t, err)

	cctx, err := cfg.Current()
	require.NoError(t, err)

	crt, err := cctx.CrtPEM()
	require.NoError(t, err)

	return cctx, crt
}

// TestClientCertificateLifecycle: the expiry warning of every command, `config renew` (same key
// and roles, old certificate still accepted, new one accepted) and the message for an expired one.
func TestClientCertificateLifecycle(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.100.2", 1)
	b := loadBundle(t, c)
	dir := t.TempDir()

	ca, err := certs.LoadCA(b.Certs.OS.Crt, b.Certs.OS.Key)
	require.NoError(t, err)

	admin, err := clientconfig.Open(c.Talosconfig)
	require.NoError(t, err)

	adminCtx, err := admin.Current()
	require.NoError(t, err)

	// writeTalosconfig writes a reader talosconfig whose certificate was issued at issuedAt.
	writeTalosconfig := func(name string, issuedAt time.Time, lifetime time.Duration) string {
		crt, key, err := ca.Issue(certs.ClientProfile([]string{role.Reader, role.Operator}, lifetime), issuedAt)
		require.NoError(t, err)

		path := filepath.Join(dir, name)
		require.NoError(t, clientconfig.New("ops@test", adminCtx.Endpoints, b.Certs.OS.Crt, crt, key).Save(path))

		return path
	}

	expiring := writeTalosconfig("expiring", time.Now(), 10*24*time.Hour)
	oldCopy := filepath.Join(dir, "old-copy")
	data, err := os.ReadFile(expiring)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(oldCopy, data, 0o600))

	t.Run("expiring soon: one warning line on stderr, unless silenced", func(t *testing.T) {
		stdout, stderr, err := ctlEnv(t, nil, "--talosconfig", expiring, "version")
		require.NoError(t, err, stderr)
		assert.Contains(t, stdout, "Server:")
		assert.Regexp(t, `^warning: the client certificate of context "ops@test" \(os:operator,os:reader\) in .* expires in 9 days \(.*\): `+
			"renew it with `nodepkictl config renew` \\(silence: --no-expiry-warning or NODEPKI_NO_EXPIRY_WARNING=1\\)\n$", stderr)

		_, stderr, err = ctlEnv(t, nil, "--talosconfig", expiring, "version", "--no-expiry-warning")
		require.NoError(t, err)
		assert.Empty(t, stderr)

		_, stderr, err = ctlEnv(t, []string{"NODEPKI_NO_EXPIRY_WARNING=1"}, "--talosconfig", expiring, "version")
		require.NoError(t, err)
		assert.Empty(t, stderr)
	})

	t.Run("config renew", func(t *testing.T) {
		beforeCtx, beforeCrt := clientCert(t, expiring)
		old, err := certs.ParseCertificate(beforeCrt)
		require.NoError(t, err)

		stdout, stderr, err := ctlEnv(t, nil, "--talosconfig", expiring, "config", "renew", "--crt-ttl", "2160h")
		require.NoError(t, err, stderr)
		assert.Empty(t, stderr, "no expiry warning from config renew itself")
		assert.Contains(t, stdout, `renewed the client certificate of context "ops@test" (roles os:operator,os:reader, same key)`)

		afterCtx, afterCrt := clientCert(t, expiring)
		renewed, err := certs.ParseCertificate(afterCrt)
		require.NoError(t, err)

		assert.Equal(t, beforeCtx.Key, afterCtx.Key, "same key")
		assert.Equal(t, beforeCtx.CA, afterCtx.CA)
		assert.Equal(t, beforeCtx.Endpoints, afterCtx.Endpoints)
		assert.NotEqual(t, beforeCtx.Crt, afterCtx.Crt)
		assert.Equal(t, old.PublicKey, renewed.PublicKey, "same key pair")
		assert.ElementsMatch(t, old.Subject.Organization, renewed.Subject.Organization, "same roles")
		assert.WithinDuration(t, time.Now().Add(2160*time.Hour), renewed.NotAfter, time.Minute)

		info, err := os.Stat(expiring)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

		// The new certificate is accepted and no longer warned about; the old one still works.
		for _, path := range []string{expiring, oldCopy} {
			stdout, stderr, err := ctlEnv(t, []string{"NODEPKI_NO_EXPIRY_WARNING=0"}, "--talosconfig", path, "version")
			require.NoError(t, err, stderr)
			assert.Contains(t, stdout, "Server:")

			if path == expiring {
				assert.Empty(t, stderr)
			}
		}
	})

	t.Run("expired: the message says how to get a new one", func(t *testing.T) {
		expired := writeTalosconfig("expired", time.Now().Add(-48*time.Hour), 24*time.Hour)

		_, stderr, err := ctlEnv(t, nil, "--talosconfig", expired, "version")
		require.Error(t, err)
		assert.Contains(t, stderr, `error: the client certificate of context "ops@test" (os:operator,os:reader) in `+expired+" expired 24 hours ago")
		assert.Contains(t, stderr, "nodepkictl gen config CLUSTER ENDPOINT --with-secrets secrets.yaml -t talosconfig -o talosconfig.new")

		before, err := os.ReadFile(expired)
		require.NoError(t, err)

		_, stderr, err = ctlEnv(t, nil, "--talosconfig", expired, "config", "renew")
		require.Error(t, err)
		assert.Contains(t, stderr, "so it cannot be renewed")

		after, err := os.ReadFile(expired)
		require.NoError(t, err)
		assert.Equal(t, before, after, "a refused renewal changes nothing")
	})
}
