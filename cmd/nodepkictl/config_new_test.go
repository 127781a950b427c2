package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
)

func TestConfigNew(t *testing.T) {
	t.Parallel()

	srv, path := startNode(t, "node1")
	dir := t.TempDir()

	existing := filepath.Join(dir, "existing")
	require.NoError(t, os.WriteFile(existing, []byte("keep me"), 0o600))

	for _, tc := range []struct {
		name      string
		args      []string
		wantErr   string
		wantRoles []string
		wantTTL   time.Duration
	}{
		{name: "refuses an existing file", args: []string{"config", "new", existing}, wantErr: existing + " already exists"},
		{
			name: "unknown role", args: []string{"config", "new", filepath.Join(dir, "a"), "--roles", "os:reader,os:root"},
			wantErr: `--roles: unknown role "os:root": want one or more of os:admin, os:operator, os:reader, os:etcd:backup`,
		},
		{name: "no role", args: []string{"config", "new", filepath.Join(dir, "b"), "--roles", ""}, wantErr: "--roles: no roles given"},
		{name: "negative ttl", args: []string{"config", "new", filepath.Join(dir, "c"), "--crt-ttl", "-1h"}, wantErr: "--crt-ttl must be positive"},
		{name: "several nodes", args: []string{"-n", "node1,node2", "config", "new", filepath.Join(dir, "d")}, wantErr: "config new asks a single node, got 2 nodes"},
		{
			name: "reader for 30 days", args: []string{"config", "new", filepath.Join(dir, "reader"), "--roles", "os:reader", "--crt-ttl", "720h"},
			wantRoles: []string{"os:reader"}, wantTTL: 720 * time.Hour,
		},
		{
			name: "defaults", args: []string{"config", "new", filepath.Join(dir, "admin")},
			wantRoles: []string{"os:admin"}, wantTTL: certs.ClientLifetime,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.Node.Generated())

			out, _, err := runCLI(t.Context(), t, append([]string{"--talosconfig", path}, tc.args...)...)
			generated := srv.Node.Generated()[before:]

			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.Empty(t, generated, "no certificate is requested when the command is refused")

				data, err := os.ReadFile(existing)
				require.NoError(t, err)
				assert.Equal(t, "keep me", string(data))

				return
			}

			require.NoError(t, err)
			require.Len(t, generated, 1)
			assert.Equal(t, tc.wantRoles, generated[0].GetRoles())
			assert.Equal(t, int64(tc.wantTTL/time.Second), generated[0].GetCrtTtlSeconds())

			written := tc.args[2]
			assert.Contains(t, out, "wrote "+written)

			info, err := os.Stat(written)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

			cfg, err := clientconfig.Open(written)
			require.NoError(t, err)

			cctx, err := cfg.Current()
			require.NoError(t, err)
			assert.Equal(t, []string{srv.Addr}, cctx.Endpoints, "endpoints are the ones the command used")

			crtPEM, err := cctx.CrtPEM()
			require.NoError(t, err)

			crt, err := certs.ParseCertificate(crtPEM)
			require.NoError(t, err)
			assert.Equal(t, tc.wantRoles, crt.Subject.Organization)
			assert.WithinDuration(t, time.Now().Add(tc.wantTTL), crt.NotAfter, time.Minute)

			// The new config works on its own.
			out, _, err = runCLI(t.Context(), t, "--talosconfig", written, "version")
			require.NoError(t, err)
			assert.Contains(t, out, "Server:")
		})
	}
}
