package main

import (
	"bytes"
	"path/filepath"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/role"
)

// expiryTree is a command tree with the global flags of nodepkictl, the expiry warning and a
// command that does nothing, writing stderr to the returned buffer.
func expiryTree(t *testing.T, args ...string) string {
	t.Helper()

	root := &cobra.Command{Use: "nodepkictl", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().String("talosconfig", "", "")
	addClientFlags(root.PersistentFlags())
	addExpiryWarning(root)
	root.AddCommand(&cobra.Command{Use: "noop", RunE: func(*cobra.Command, []string) error { return nil }})

	var stderr bytes.Buffer

	root.SetErr(&stderr)
	root.SetOut(&bytes.Buffer{})
	root.SetArgs(args)
	require.NoError(t, root.ExecuteContext(t.Context()))

	return stderr.String()
}

func writeClientConfig(t *testing.T, issuedAt time.Time, lifetime time.Duration) string {
	t.Helper()

	caCrt, caKey, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	ca, err := certs.LoadCA(caCrt, caKey)
	require.NoError(t, err)

	crt, key, err := ca.Issue(certs.ClientProfile([]string{role.Admin}, lifetime), issuedAt)
	require.NoError(t, err)

	path := filepath.Join(t.TempDir(), "talosconfig")
	require.NoError(t, clientconfig.New("admin@demo", []string{"127.0.100.9"}, caCrt, crt, key).Save(path))

	return path
}

func TestExpiryWarning(t *testing.T) {
	now := time.Now()

	for _, tc := range []struct {
		name     string
		issuedAt time.Time
		lifetime time.Duration
		args     []string
		env      string
		want     string
	}{
		{name: "a year left", issuedAt: now, lifetime: certs.ClientLifetime},
		{name: "31 days left", issuedAt: now, lifetime: 31 * 24 * time.Hour},
		{
			name: "29 days left", issuedAt: now, lifetime: 29 * 24 * time.Hour,
			want: `warning: the client certificate of context "admin@demo" (os:admin) in TALOSCONFIG expires in 28 days (`,
		},
		{name: "silenced by flag", issuedAt: now, lifetime: time.Hour, args: []string{"--no-expiry-warning"}},
		{name: "silenced by environment", issuedAt: now, lifetime: time.Hour, env: "1"},
		{
			name: "environment says no", issuedAt: now, lifetime: time.Hour, env: "0",
			want: "expires in 59 minutes",
		},
		{
			name: "expired", issuedAt: now.Add(-3 * 24 * time.Hour), lifetime: 24 * time.Hour,
			want: `error: the client certificate of context "admin@demo" (os:admin) in TALOSCONFIG expired 2 days ago (`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(noExpiryWarningEnv, tc.env)

			path := writeClientConfig(t, tc.issuedAt, tc.lifetime)
			stderr := expiryTree(t, append([]string{"--talosconfig", path, "noop"}, tc.args...)...)

			if tc.want == "" {
				assert.Empty(t, stderr)

				return
			}

			want := bytes.ReplaceAll([]byte(tc.want), []byte("TALOSCONFIG"), []byte(path))
			assert.Contains(t, stderr, string(want))

			if tc.name == "expired" {
				assert.Contains(t, stderr, "gen config CLUSTER ENDPOINT --with-secrets secrets.yaml -t talosconfig")
			} else {
				assert.Equal(t, 1, bytes.Count([]byte(stderr), []byte("\n")), "one line: %s", stderr)
				assert.Contains(t, stderr, "renew it with `nodepkictl config renew`")
			}
		})
	}
}

func TestExpiryWarningWithoutTalosconfig(t *testing.T) {
	t.Setenv(noExpiryWarningEnv, "")

	assert.Empty(t, expiryTree(t, "--talosconfig", filepath.Join(t.TempDir(), "missing"), "noop"))
}
