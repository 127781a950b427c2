package clientconfig

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
)

type credentials struct {
	ca, crt, key []byte
	notAfter     time.Time
}

func newCredentials(t *testing.T, roles []string, ttl time.Duration) credentials {
	t.Helper()

	caPEM, caKeyPEM, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	ca, err := certs.LoadCA(caPEM, caKeyPEM)
	require.NoError(t, err)

	crt, key, err := ca.Issue(certs.ClientProfile(roles, ttl), time.Now())
	require.NoError(t, err)

	parsed, err := certs.ParseCertificate(crt)
	require.NoError(t, err)

	return credentials{ca: caPEM, crt: crt, key: key, notAfter: parsed.NotAfter}
}

func TestNewAndRoundTrip(t *testing.T) {
	t.Parallel()

	creds := newCredentials(t, []string{"os:admin"}, time.Hour)
	endpoints := []string{"127.0.0.1", "127.0.0.2:50000"}

	cfg := New("admin@demo", endpoints, creds.ca, creds.crt, creds.key)
	endpoints[0] = "mutated"

	ctx, err := cfg.Current()
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1", "127.0.0.2:50000"}, ctx.Endpoints, "New copies the endpoints")

	for name, tc := range map[string]struct {
		get  func() ([]byte, error)
		want []byte
	}{
		"ca": {ctx.CAPEM, creds.ca}, "crt": {ctx.CrtPEM, creds.crt}, "key": {ctx.KeyPEM, creds.key},
	} {
		got, err := tc.get()
		require.NoError(t, err, name)
		assert.Equal(t, tc.want, got, name)
	}

	data, err := cfg.Bytes()
	require.NoError(t, err)
	assert.Contains(t, string(data), "context: admin@demo\ncontexts:\n    admin@demo:\n        endpoints:\n")
	assert.Contains(t, string(data), "ca: "+base64.StdEncoding.EncodeToString(creds.ca))

	parsed, err := Parse(data)
	require.NoError(t, err)
	assert.Equal(t, cfg, parsed)
}

func TestParseKeepsUnknownKeysAndMigratesTarget(t *testing.T) {
	t.Parallel()

	cfg, err := Parse([]byte(`context: omni
contexts:
    omni:
        endpoints:
            - https://omni.example
        auth:
            siderov1:
                identity: someone@example.com
        cluster: prod
    legacy:
        target: 10.5.0.2
        endpoints: []
    legacyDup:
        target: 10.5.0.3
        endpoints: [10.5.0.3]
`))
	require.NoError(t, err)

	assert.Equal(t, []string{"10.5.0.2"}, cfg.Contexts["legacy"].Endpoints)
	assert.Empty(t, cfg.Contexts["legacy"].Extra)
	assert.Equal(t, []string{"10.5.0.3"}, cfg.Contexts["legacyDup"].Endpoints)

	data, err := cfg.Bytes()
	require.NoError(t, err)
	assert.Contains(t, string(data), "identity: someone@example.com")
	assert.Contains(t, string(data), "cluster: prod")
	assert.NotContains(t, string(data), "target:")
}

func TestParseErrors(t *testing.T) {
	t.Parallel()

	for name, input := range map[string]string{
		"not YAML":         "context: [\n",
		"contexts is list": "contexts: [a, b]\n",
	} {
		_, err := Parse([]byte(input))
		require.ErrorContains(t, err, "talosconfig is not valid", name)
	}

	empty, err := Parse(nil)
	require.NoError(t, err)
	assert.NotNil(t, empty.Contexts)

	ctx := &Context{CA: "###"}
	_, err = ctx.CAPEM()
	require.EqualError(t, err, "context ca: not valid base64: want the standard base64 encoding of PEM text")

	_, err = ctx.KeyPEM()
	require.EqualError(t, err, "context has no key")
}

func TestCurrent(t *testing.T) {
	t.Parallel()

	cfg := &Config{Contexts: map[string]*Context{"b": {}, "a": {}}}

	_, err := cfg.Current()
	require.EqualError(t, err, "talosconfig has no current context: choose one of [a, b] with `nodepkictl config context NAME`")

	cfg.Context = "c"
	_, err = cfg.Current()
	require.EqualError(t, err, `context "c" is not defined in talosconfig; defined contexts: [a, b]`)

	cfg.Context = "a"
	ctx, err := cfg.Current()
	require.NoError(t, err)
	assert.Same(t, cfg.Contexts["a"], ctx)
}

func TestMerge(t *testing.T) {
	t.Parallel()

	cfg := &Config{
		Context: "prod",
		Contexts: map[string]*Context{
			"prod":   {Endpoints: []string{"1"}},
			"prod-1": {Endpoints: []string{"2"}},
			"dev":    {Endpoints: []string{"3"}},
		},
	}

	other := &Config{
		Context: "prod",
		Contexts: map[string]*Context{
			"prod":    {Endpoints: []string{"4"}},
			"dev":     {Endpoints: []string{"5"}},
			"staging": {Endpoints: []string{"6"}},
		},
	}

	renames := cfg.Merge(other)

	assert.Equal(t, []Rename{{From: "dev", To: "dev-1"}, {From: "prod", To: "prod-2"}}, renames)
	assert.Equal(t, `"prod" -> "prod-2"`, renames[1].String())
	assert.Equal(t, "prod-2", cfg.Context, "other's current context, renamed, becomes current")
	assert.Equal(t, []string{"dev", "dev-1", "prod", "prod-1", "prod-2", "staging"}, cfg.ContextNames())
	assert.Equal(t, []string{"1"}, cfg.Contexts["prod"].Endpoints, "existing contexts are untouched")
	assert.Equal(t, []string{"4"}, cfg.Contexts["prod-2"].Endpoints)
	assert.Equal(t, []string{"5"}, cfg.Contexts["dev-1"].Endpoints)

	other.Contexts["staging"].Endpoints[0] = "mutated"
	assert.Equal(t, []string{"6"}, cfg.Contexts["staging"].Endpoints, "merged contexts are copies")

	into := &Config{}
	assert.Empty(t, into.Merge(&Config{Contexts: map[string]*Context{"x": {}}}))
	assert.Empty(t, into.Context, "no current context in other leaves none")
	assert.Equal(t, []string{"x"}, into.ContextNames())
}

func TestSaveAndOpen(t *testing.T) {
	t.Parallel()

	creds := newCredentials(t, []string{"os:reader"}, time.Hour)
	cfg := New("demo", []string{"127.0.0.1"}, creds.ca, creds.crt, creds.key)

	dir := filepath.Join(t.TempDir(), "home", ".talos")
	path := filepath.Join(dir, "config")
	require.NoError(t, cfg.Save(path))

	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600} {
		info, err := os.Stat(p)
		require.NoError(t, err)
		assert.Equal(t, want, info.Mode().Perm(), p)
	}

	opened, err := Open(path)
	require.NoError(t, err)
	assert.Equal(t, cfg, opened)

	// Replacing keeps 0600 even if someone loosened the mode, and leaves no temp file.
	require.NoError(t, os.Chmod(path, 0o644))
	opened.Context = ""
	require.NoError(t, opened.Save(path))

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1)

	_, err = Open(filepath.Join(dir, "absent"))
	require.ErrorIs(t, err, os.ErrNotExist)

	require.NoError(t, os.WriteFile(path, []byte("contexts: 5\n"), 0o600))
	_, err = Open(path)
	require.ErrorContains(t, err, path)
}

func TestDefaultPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv(EnvVar, "")

	path, err := DefaultPath()
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(home, ".talos", "config"), path)

	t.Setenv(EnvVar, "/etc/talosconfig")

	path, err = DefaultPath()
	require.NoError(t, err)
	assert.Equal(t, "/etc/talosconfig", path)

	path, err = ResolvePath("/explicit")
	require.NoError(t, err)
	assert.Equal(t, "/explicit", path, "an explicit path wins over $TALOSCONFIG")

	path, err = ResolvePath("")
	require.NoError(t, err)
	assert.Equal(t, "/etc/talosconfig", path)
}

func TestInfo(t *testing.T) {
	t.Parallel()

	creds := newCredentials(t, []string{"os:reader", "os:admin"}, 365*24*time.Hour)
	cfg := New("demo", []string{"127.0.0.1"}, creds.ca, creds.crt, creds.key)
	cfg.Contexts["demo"].Nodes = []string{"127.0.0.2", "127.0.0.3"}

	info, err := cfg.infoAt(time.Now().Add(time.Second))
	require.NoError(t, err)

	assert.Equal(t, &Info{
		Context:      "demo",
		Endpoints:    []string{"127.0.0.1"},
		Nodes:        []string{"127.0.0.2", "127.0.0.3"},
		Roles:        []string{"os:admin", "os:reader"},
		CertTTL:      "in 364 days",
		CertNotAfter: creds.notAfter.UTC(),
	}, info)

	info, err = cfg.infoAt(creds.notAfter.Add(72 * time.Hour))
	require.NoError(t, err)
	assert.Equal(t, "expired 3 days ago", info.CertTTL)

	noCert := &Config{Context: "omni", Contexts: map[string]*Context{"omni": {Endpoints: []string{"https://omni.example"}}}}
	info, err = noCert.Info()
	require.NoError(t, err)
	assert.Empty(t, info.Roles)
	assert.True(t, info.CertNotAfter.IsZero())

	broken := New("demo", nil, creds.ca, []byte("not a cert"), creds.key)
	_, err = broken.Info()
	require.ErrorContains(t, err, `context "demo": client certificate: not PEM`)
}

func TestRelative(t *testing.T) {
	t.Parallel()

	for d, want := range map[time.Duration]string{
		365*24*time.Hour - time.Second: "in 364 days",
		48 * time.Hour:                 "in 2 days",
		47 * time.Hour:                 "in 47 hours",
		90 * time.Minute:               "in 90 minutes",
		time.Minute:                    "in 60 seconds",
		time.Second:                    "in 1 second",
		-25 * time.Hour:                "expired 25 hours ago",
		-2 * 24 * time.Hour:            "expired 2 days ago",
	} {
		assert.Equal(t, want, Relative(d), d.String())
	}
}
