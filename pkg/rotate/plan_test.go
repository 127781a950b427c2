package rotate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
)

func TestPlanRoundTrip(t *testing.T) {
	t.Parallel()

	f := newPatchFixture(t)
	path := filepath.Join(t.TempDir(), DefaultPlanName)

	require.NoError(t, f.plan.Save(path))

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	loaded, err := LoadPlan(path)
	require.NoError(t, err)
	assert.Equal(t, f.plan.Roots, loaded.Roots)
	assert.Equal(t, f.plan.Client, loaded.Client)
	assert.Equal(t, AllRoots, loaded.Roots.List())

	// The client certificate is issued by the new OS CA with the given roles.
	crt, err := certs.ParseCertificate(loaded.Client.Crt)
	require.NoError(t, err)
	assert.Equal(t, []string{adminRole}, crt.Subject.Organization)

	ca, err := certs.ParseCertificate(loaded.Roots.OS.New.Crt)
	require.NoError(t, err)
	require.NoError(t, crt.CheckSignatureFrom(ca))
}

func TestParsePlanErrors(t *testing.T) {
	t.Parallel()

	f := newPatchFixture(t)
	valid, err := f.plan.Bytes()
	require.NoError(t, err)

	otherCrt, otherKey, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	osNew := f.plan.Roots.OS.New
	osOld := f.plan.Roots.OS.Old

	tests := []struct {
		name string
		edit func(s string) string
		want string
	}{
		{"empty", func(string) string { return "" }, "the file is empty"},
		{"unknown key", func(s string) string { return strings.Replace(s, "roots:", "rots: {}\nroots:", 1) }, "rots"},
		{"wrong version", func(s string) string { return strings.Replace(s, "version: 1", "version: 2", 1) }, "version: is 2, want 1"},
		{"no roots", func(string) string { return "version: 1\nroots: {}\n" }, "no root to rotate"},
		{"key of another CA", func(s string) string { return strings.Replace(s, b64(osNew.Key), b64(otherKey), 1) }, "roots.os.new: key does not match"},
		{"fingerprint mismatch", func(s string) string { return strings.Replace(s, osNew.Fingerprint, strings.Repeat("0", 64), 1) }, "roots.os.new: fingerprint"},
		{"old equals new", func(s string) string {
			s = strings.Replace(s, b64(osOld.Crt), b64(osNew.Crt), 1)
			s = strings.Replace(s, b64(osOld.Key), b64(osNew.Key), 1)

			return strings.Replace(s, osOld.Fingerprint, osNew.Fingerprint, 1)
		}, "old and new are the same CA"},
		{"a leaf instead of a CA", func(s string) string {
			ca, err := certs.LoadCA(otherCrt, otherKey)
			require.NoError(t, err)

			leaf, leafKey, err := ca.Issue(certs.ClientProfile([]string{adminRole}, time.Hour), time.Now())
			require.NoError(t, err)

			s = strings.Replace(s, b64(osNew.Crt), b64(leaf), 1)
			s = strings.Replace(s, osNew.Fingerprint, "", 1)

			return strings.Replace(s, b64(osNew.Key), b64(leafKey), 1)
		}, "not a CA"},
		{"client key mismatch", func(s string) string { return strings.Replace(s, b64(f.plan.Client.Key), b64(otherKey), 1) }, "client: key does not match"},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			edited := tc.edit(string(valid))
			require.NotEqual(t, string(valid), edited, "the edit changed nothing")

			_, err := ParsePlan([]byte(edited))
			require.ErrorContains(t, err, tc.want)

			for _, secret := range [][]byte{osNew.Key, otherKey} {
				assert.NotContains(t, err.Error(), b64(secret), "an error message shows a key")
			}
		})
	}
}

func TestWriteTalosconfigKeepsEverythingElse(t *testing.T) {
	t.Parallel()

	path := filepath.Join(t.TempDir(), "talosconfig")
	original := "context: prod\ncontexts:\n    prod:\n        endpoints:\n            - 10.5.0.2\n            - 10.5.0.3\n        nodes:\n            - 10.5.0.2\n" +
		"        ca: b2xk\n        crt: b2xk\n        key: b2xk\n        auth:\n            siderov1: {identity: someone}\n" +
		"    staging:\n        endpoints:\n            - 10.6.0.2\n        ca: c3Rn\n"
	require.NoError(t, os.WriteFile(path, []byte(original), 0o600))

	creds := Credentials{CA: []byte("CA"), Crt: []byte("CRT"), Key: []byte("KEY")}

	changed, err := writeTalosconfig(path, "prod", nil, creds)
	require.NoError(t, err)
	assert.True(t, changed)

	cfg, err := clientconfig.Open(path)
	require.NoError(t, err)
	assert.Equal(t, "prod", cfg.Context)

	prod := cfg.Contexts["prod"]
	assert.Equal(t, []string{"10.5.0.2", "10.5.0.3"}, prod.Endpoints)
	assert.Equal(t, []string{"10.5.0.2"}, prod.Nodes)
	assert.Equal(t, b64([]byte("CA")), prod.CA)
	assert.Equal(t, b64([]byte("CRT")), prod.Crt)
	assert.Equal(t, b64([]byte("KEY")), prod.Key)
	assert.Contains(t, prod.Extra, "auth")
	assert.Equal(t, "c3Rn", cfg.Contexts["staging"].CA)

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	changed, err = writeTalosconfig(path, "prod", nil, creds)
	require.NoError(t, err)
	assert.False(t, changed, "the same credentials again write nothing")
}

func TestWriteTalosconfigCreatesOutput(t *testing.T) {
	t.Parallel()

	path := filepath.Join(t.TempDir(), "new-talosconfig")
	template := &clientconfig.Context{Endpoints: []string{"10.5.0.2"}, Nodes: []string{"10.5.0.2", "10.5.0.3"}}

	changed, err := writeTalosconfig(path, "prod", template, Credentials{CA: []byte("CA"), Crt: []byte("CRT"), Key: []byte("KEY")})
	require.NoError(t, err)
	assert.True(t, changed)

	cfg, err := clientconfig.Open(path)
	require.NoError(t, err)
	assert.Equal(t, "prod", cfg.Context)
	assert.Equal(t, template.Endpoints, cfg.Contexts["prod"].Endpoints)
	assert.Equal(t, template.Nodes, cfg.Contexts["prod"].Nodes)
}

func TestUpdateSecretsIsIdempotent(t *testing.T) {
	t.Parallel()

	f := newPatchFixture(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "secrets.yaml")
	require.NoError(t, f.bundle.WriteFile(path, false))
	require.NoError(t, checkSecrets(path, f.plan))

	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

	backup, changed, err := updateSecrets(path, f.plan, now)
	require.NoError(t, err)
	assert.True(t, changed)
	assert.Equal(t, path+".20260102T030405Z.bak", backup)

	// Updated: still this cluster's bundle (the new roots), and a second update changes nothing.
	require.NoError(t, checkSecrets(path, f.plan))

	_, changed, err = updateSecrets(path, f.plan, now.Add(time.Hour))
	require.NoError(t, err)
	assert.False(t, changed)

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 2, "one secrets.yaml and one backup")
}
