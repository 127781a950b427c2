package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/role"
)

// writeTalosconfig saves a talosconfig with a real os:admin certificate from a fresh bundle
// and returns its path and the certificate's expiry.
func writeTalosconfig(t *testing.T, contextName string, endpoints ...string) (string, time.Time) {
	t.Helper()

	b, err := bundle.Generate()
	require.NoError(t, err)

	crt, key, err := b.NewClientCertificate([]string{role.Admin}, certs.ClientLifetime)
	require.NoError(t, err)

	parsed, err := certs.ParseCertificate(crt)
	require.NoError(t, err)

	path := filepath.Join(t.TempDir(), "talosconfig")
	require.NoError(t, clientconfig.New(contextName, endpoints, b.Certs.OS.Crt, crt, key).Save(path))

	return path, parsed.NotAfter
}

func openConfig(t *testing.T, path string) *clientconfig.Config {
	t.Helper()

	cfg, err := clientconfig.Open(path)
	require.NoError(t, err)

	return cfg
}

func TestConfigInfoText(t *testing.T) {
	t.Parallel()

	path, notAfter := writeTalosconfig(t, "admin@demo", "127.0.0.1", "127.0.0.2")

	stdout, _, err := runSecretsConfigCLI(t, "--talosconfig", path, "config", "info")
	require.NoError(t, err)

	for _, want := range []string{
		`(?m)^Current context: +admin@demo$`,
		`(?m)^Endpoints: +127\.0\.0\.1, 127\.0\.0\.2$`,
		`(?m)^Nodes: +not defined$`,
		`(?m)^Roles: +os:admin$`,
		`(?m)^Certificate expires: +` + notAfter.UTC().Format("2006-01-02") + ` \(in 364 days\)$`,
	} {
		assert.Regexp(t, regexp.MustCompile(want), stdout)
	}
}

func TestConfigInfoStructured(t *testing.T) {
	t.Parallel()

	path, notAfter := writeTalosconfig(t, "admin@demo", "127.0.0.1")

	stdout, _, err := runSecretsConfigCLI(t, "--talosconfig", path, "config", "info", "-o", "json")
	require.NoError(t, err)

	var fromJSON map[string]any
	require.NoError(t, json.Unmarshal([]byte(stdout), &fromJSON))
	assert.Equal(t, "admin@demo", fromJSON["context"])
	assert.Equal(t, []any{"127.0.0.1"}, fromJSON["endpoints"])
	assert.Nil(t, fromJSON["nodes"])
	assert.Contains(t, fromJSON, "nodes")
	assert.Equal(t, []any{"os:admin"}, fromJSON["roles"])
	assert.Equal(t, "in 364 days", fromJSON["certTTL"])
	assert.Equal(t, notAfter.UTC().Format(time.RFC3339), fromJSON["certNotAfter"])

	stdout, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "info", "-o", "yaml")
	require.NoError(t, err)

	var fromYAML clientconfig.Info
	require.NoError(t, yaml.Load([]byte(stdout), &fromYAML))
	assert.Equal(t, "admin@demo", fromYAML.Context)
	assert.Equal(t, []string{"os:admin"}, fromYAML.Roles)
	assert.True(t, notAfter.Equal(fromYAML.CertNotAfter))

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "info", "-o", "table")
	require.EqualError(t, err, `unknown output format "table": want text, json or yaml`)
}

func TestConfigInfoErrors(t *testing.T) {
	t.Parallel()

	missing := filepath.Join(t.TempDir(), "absent")
	_, _, err := runSecretsConfigCLI(t, "--talosconfig", missing, "config", "info")
	require.ErrorContains(t, err, missing)

	path, _ := writeTalosconfig(t, "demo")

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "--context", "nope", "config", "info")
	require.EqualError(t, err, `context "nope" is not defined in talosconfig; defined contexts: [demo]`)
}

func TestConfigMerge(t *testing.T) {
	t.Parallel()

	path, _ := writeTalosconfig(t, "admin@demo", "127.0.0.1")
	other, _ := writeTalosconfig(t, "admin@demo", "127.0.0.9")

	_, stderr, err := runSecretsConfigCLI(t, "--talosconfig", path, "config", "merge", other)
	require.NoError(t, err)
	assert.Contains(t, stderr, `renamed context "admin@demo" -> "admin@demo-1"`)

	cfg := openConfig(t, path)
	assert.Equal(t, "admin@demo-1", cfg.Context)
	assert.Equal(t, []string{"admin@demo", "admin@demo-1"}, cfg.ContextNames())
	assert.Equal(t, []string{"127.0.0.9"}, cfg.Contexts["admin@demo-1"].Endpoints)
	assert.Equal(t, openConfig(t, other).Contexts["admin@demo"].Crt, cfg.Contexts["admin@demo-1"].Crt)

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "merge", other)
	require.NoError(t, err)
	assert.Equal(t, []string{"admin@demo", "admin@demo-1", "admin@demo-2"}, openConfig(t, path).ContextNames())

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	before, err := os.ReadFile(path)
	require.NoError(t, err)

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "merge", filepath.Join(t.TempDir(), "absent"))
	require.ErrorContains(t, err, "absent")

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "a failed merge changes nothing")
}

// TestConfigRemoveThenMergeReplacesAContext: the way to replace a context by a new one of the
// same name (docs/rotation.md, by hand).
func TestConfigRemoveThenMergeReplacesAContext(t *testing.T) {
	t.Parallel()

	path, _ := writeTalosconfig(t, "admin@demo", "127.0.0.1")
	newer, _ := writeTalosconfig(t, "admin@demo", "127.0.0.9")

	before, err := os.ReadFile(path)
	require.NoError(t, err)

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "remove", "admin@demo", "nope")
	require.ErrorContains(t, err, `context "nope" is not defined`)

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, before, after, "a refused remove changes nothing")

	_, stderr, err := runSecretsConfigCLI(t, "--talosconfig", path, "config", "remove", "admin@demo")
	require.NoError(t, err)
	assert.Contains(t, stderr, "no current context")
	assert.Empty(t, openConfig(t, path).ContextNames())

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "merge", newer)
	require.NoError(t, err)

	cfg := openConfig(t, path)
	assert.Equal(t, "admin@demo", cfg.Context)
	assert.Equal(t, []string{"admin@demo"}, cfg.ContextNames())
	assert.Equal(t, []string{"127.0.0.9"}, cfg.Contexts["admin@demo"].Endpoints)
}

// TestConfigDefaultPath checks the resolution order without --talosconfig: $TALOSCONFIG, then
// ~/.talos/config (created with a 0700 directory by merge).
func TestConfigDefaultPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv(clientconfig.EnvVar, "")

	other, _ := writeTalosconfig(t, "demo", "127.0.0.1")

	_, _, err := runSecretsConfigCLI(t, "config", "merge", other)
	require.NoError(t, err)

	talosDir := filepath.Join(home, ".talos")

	dirInfo, err := os.Stat(talosDir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), dirInfo.Mode().Perm())
	assert.Equal(t, "demo", openConfig(t, filepath.Join(talosDir, "config")).Context)

	fromEnv, _ := writeTalosconfig(t, "from-env", "127.0.0.5")
	t.Setenv(clientconfig.EnvVar, fromEnv)

	stdout, _, err := runSecretsConfigCLI(t, "config", "info")
	require.NoError(t, err)
	assert.Contains(t, stdout, "from-env")

	stdout, _, err = runSecretsConfigCLI(t, "--talosconfig", filepath.Join(talosDir, "config"), "config", "info")
	require.NoError(t, err)
	assert.Contains(t, stdout, "demo", "--talosconfig wins over $TALOSCONFIG")
}

func TestConfigContextEndpointNode(t *testing.T) {
	t.Parallel()

	path, _ := writeTalosconfig(t, "one", "127.0.0.1")
	other, _ := writeTalosconfig(t, "two", "127.0.0.2")

	_, _, err := runSecretsConfigCLI(t, "--talosconfig", path, "config", "merge", other)
	require.NoError(t, err)

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "context", "one")
	require.NoError(t, err)
	assert.Equal(t, "one", openConfig(t, path).Context)

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "context", "three")
	require.EqualError(t, err, `context "three" is not defined in talosconfig; defined contexts: [one, two]`)
	assert.Equal(t, "one", openConfig(t, path).Context)

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "endpoint", "127.0.0.7", "https://127.0.0.8:50000")
	require.NoError(t, err)

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "node", "127.0.0.9", "127.0.0.10")
	require.NoError(t, err)

	cfg := openConfig(t, path)
	assert.Equal(t, []string{"127.0.0.7", "https://127.0.0.8:50000"}, cfg.Contexts["one"].Endpoints)
	assert.Equal(t, []string{"127.0.0.9", "127.0.0.10"}, cfg.Contexts["one"].Nodes)
	assert.Equal(t, []string{"127.0.0.2"}, cfg.Contexts["two"].Endpoints, "only the current context changes")

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "--context", "two", "config", "node", "127.0.0.11")
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.11"}, openConfig(t, path).Contexts["two"].Nodes, "--context picks the context to change")

	_, _, err = runSecretsConfigCLI(t, "--talosconfig", path, "config", "node")
	require.NoError(t, err)
	assert.Empty(t, openConfig(t, path).Contexts["one"].Nodes, "no nodes clears them")

	for _, args := range [][]string{{"endpoint"}, {"endpoint", "127.0.0.1,127.0.0.2"}, {"node", ""}} {
		_, _, err = runSecretsConfigCLI(t, append([]string{"--talosconfig", path, "config"}, args...)...)
		require.Error(t, err, "%v", args)
	}

	assert.Equal(t, []string{"127.0.0.7", "https://127.0.0.8:50000"}, openConfig(t, path).Contexts["one"].Endpoints)
}

func TestConfigContexts(t *testing.T) {
	t.Parallel()

	path, _ := writeTalosconfig(t, "one", "127.0.0.1")
	other, _ := writeTalosconfig(t, "two", "127.0.0.2", "127.0.0.3")

	_, _, err := runSecretsConfigCLI(t, "--talosconfig", path, "config", "merge", other)
	require.NoError(t, err)

	stdout, _, err := runSecretsConfigCLI(t, "--talosconfig", path, "config", "contexts")
	require.NoError(t, err)

	assert.Regexp(t, regexp.MustCompile(`(?m)^CURRENT +NAME +ENDPOINTS +NODES$`), stdout)
	assert.Regexp(t, regexp.MustCompile(`(?m)^ +one +127\.0\.0\.1 *$`), stdout)
	assert.Regexp(t, regexp.MustCompile(`(?m)^\* +two +127\.0\.0\.2,127\.0\.0\.3 *$`), stdout)
}
