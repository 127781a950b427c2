package nodeapi_test

import (
	"encoding/base64"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/cluster"
)

// createCluster runs cluster.Create with the test binaries; a cluster it returns is destroyed
// when the test ends.
func createCluster(t *testing.T, opts cluster.Options) (*cluster.Cluster, error) {
	t.Helper()

	if opts.Daemon == "" {
		opts.Daemon = filepath.Join(binDir, "nodepkid")
	}

	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 60 * time.Second
	}

	c, err := cluster.Create(t.Context(), opts)
	if c != nil {
		t.Cleanup(func() { assert.NoError(t, c.Destroy()) })
	}

	return c, err
}

// TestClusterCreateOnAddressesInUse starts a second cluster on the addresses of a running one: it
// is refused within seconds, naming the address in use, and leaves no directory behind.
func TestClusterCreateOnAddressesInUse(t *testing.T) {
	t.Parallel()

	first := netip.MustParseAddr("127.0.60.2")

	_, err := createCluster(t, cluster.Options{Name: "first", ControlPlanes: 1, Dir: filepath.Join(t.TempDir(), "first"), FirstAddress: first})
	require.NoError(t, err)

	second := filepath.Join(t.TempDir(), "second")
	started := time.Now()

	c, err := createCluster(t, cluster.Options{
		Name: "second", ControlPlanes: 1, Dir: second, FirstAddress: first,
		ReadyTimeout: 60 * time.Second,
	})
	require.Error(t, err)
	assert.Nil(t, c)
	assert.Contains(t, err.Error(), "127.0.60.2:50000 is already in use")
	assert.NotContains(t, err.Error(), "x509", "the error is its own, not the other cluster's")
	assert.Less(t, time.Since(started), 10*time.Second, "refused at once, not after the ready timeout")
	assert.NoDirExists(t, second, "a refused create leaves nothing behind")
}

// TestClusterCreateReportsANodeThatExits proves that a node process that exits at start fails the
// create at once with that node's own error, and that nothing is left behind.
func TestClusterCreateReportsANodeThatExits(t *testing.T) {
	t.Parallel()

	// A daemon that fails the way nodepkid does when it cannot start (a port taken between the
	// check and the start, say): it prints its error and exits.
	daemon := filepath.Join(t.TempDir(), "nodepkid")
	require.NoError(t, os.WriteFile(daemon,
		[]byte("#!/bin/sh\necho 'error: error listening for the node API: listen tcp 127.0.64.2:50000: bind: address already in use' >&2\nexit 1\n"),
		0o700))

	parent := t.TempDir()
	dir := filepath.Join(parent, "cluster")
	started := time.Now()

	c, err := createCluster(t, cluster.Options{
		Name: "exits", ControlPlanes: 1, Workers: 1, Dir: dir, Daemon: daemon,
		FirstAddress: netip.MustParseAddr("127.0.64.2"), ReadyTimeout: 60 * time.Second,
	})
	require.Error(t, err)
	assert.Nil(t, c)
	assert.Contains(t, err.Error(), "exited at start")
	assert.Contains(t, err.Error(), "bind: address already in use")
	assert.Less(t, time.Since(started), 20*time.Second, "reported at once, not after the ready timeout")
	assert.NoDirExists(t, dir)

	entries, err := os.ReadDir(parent)
	require.NoError(t, err)
	assert.Empty(t, entries)

	// In a directory of the user's, only what create wrote goes.
	own := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(own, "notes.txt"), []byte("mine"), 0o600))

	_, err = createCluster(t, cluster.Options{
		Name: "exits", ControlPlanes: 1, Dir: own, Daemon: daemon, FirstAddress: netip.MustParseAddr("127.0.64.2"),
	})
	require.ErrorContains(t, err, "exited at start")

	entries, err = os.ReadDir(own)
	require.NoError(t, err)
	require.Len(t, entries, 1)
	assert.Equal(t, "notes.txt", entries[0].Name())
}

// TestClusterCreateThreeControlPlanes proves that every control plane is an endpoint of the
// talosconfig: with the first one down, commands still work through the others.
func TestClusterCreateThreeControlPlanes(t *testing.T) {
	t.Parallel()

	c, err := createCluster(t, cluster.Options{
		Name: "ha", ControlPlanes: 3, Dir: filepath.Join(t.TempDir(), "ha"),
		FirstAddress: netip.MustParseAddr("127.0.61.2"),
	})
	require.NoError(t, err)

	cfg, err := clientconfig.Open(c.Talosconfig)
	require.NoError(t, err)

	cctx, err := cfg.Current()
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.61.2", "127.0.61.3", "127.0.61.4"}, cctx.Endpoints)

	require.NoError(t, c.Stop("127.0.61.2"))

	for _, node := range []string{"127.0.61.3", "127.0.61.4"} {
		out, err := ctl(t, t.Context(), "--talosconfig", c.Talosconfig, "-n", node, "get", "certificatestatus", "api")
		require.NoError(t, err, "with the first control plane down:\n%s", out)
		assert.Contains(t, out, "valid")
	}
}

// TestClusterCLIWithSecretsAndAbsolutePaths creates a cluster from the user's own bundle with the
// CLI and a relative --state: the user's talosconfig from `gen config` works against it, and
// `cluster show` prints absolute paths wherever it runs.
func TestClusterCLIWithSecretsAndAbsolutePaths(t *testing.T) {
	t.Parallel()

	work := t.TempDir()
	ctlIn := func(dir string, args ...string) (string, error) {
		cmd := exec.CommandContext(t.Context(), filepath.Join(binDir, "nodepkictl"), args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()

		return string(out), err
	}

	out, err := ctlIn(work, "gen", "secrets", "-o", "secrets.yaml")
	require.NoError(t, err, out)
	out, err = ctlIn(work, "gen", "config", "mine", "https://127.0.62.2:6443", "--with-secrets", "secrets.yaml", "-o", "out")
	require.NoError(t, err, out)

	out, err = ctlIn(work, "cluster", "create", "--name", "mine", "--controlplanes", "1", "--workers", "1",
		"--first-address", "127.0.62.2", "--with-secrets", "secrets.yaml", "--state", "state")
	t.Cleanup(func() {
		if _, statErr := os.Stat(filepath.Join(work, "state", "cluster.yaml")); statErr == nil {
			c, loadErr := cluster.Load(filepath.Join(work, "state"))
			if assert.NoError(t, loadErr) {
				assert.NoError(t, c.Destroy())
			}
		}
	})
	require.NoError(t, err, out)
	assert.NoFileExists(t, filepath.Join(work, "state", "secrets.yaml"), "the user's bundle is used, not a copy")

	// The talosconfig of `gen config` (same bundle) works against the cluster.
	out, err = ctlIn(work, "--talosconfig", "out/talosconfig", "-e", "127.0.62.2", "-n", "127.0.62.3", "get", "certificatestatus", "api")
	require.NoError(t, err, out)
	assert.Contains(t, out, "valid")

	b, err := bundle.Load(filepath.Join(work, "secrets.yaml"))
	require.NoError(t, err)

	clusterCfg, err := clientconfig.Open(filepath.Join(work, "state", "talosconfig"))
	require.NoError(t, err)

	cctx, err := clusterCfg.Current()
	require.NoError(t, err)
	assert.Equal(t, base64.StdEncoding.EncodeToString(b.Certs.OS.Crt), cctx.CA, "the cluster's talosconfig trusts the user's OS CA")

	elsewhere := t.TempDir()
	out, err = ctlIn(elsewhere, "cluster", "show", "--state", filepath.Join(work, "state"))
	require.NoError(t, err, out)

	absState, err := filepath.EvalSymlinks(filepath.Join(work, "state"))
	require.NoError(t, err)

	for _, want := range []string{
		"talosconfig " + filepath.Join(absState, "talosconfig"),
		filepath.Join(absState, "nodes", "mine-controlplane-1.log"),
		filepath.Join(absState, "nodes", "mine-worker-1.log"),
	} {
		assert.Contains(t, out, want)
	}
}
