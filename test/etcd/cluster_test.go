package etcd

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/etcd/etcdtest"
)

// TestEtcdClusterAndSnapshots forms a 3-member etcd cluster on nodepki certificates (plus a
// worker, which runs none), lists its members through each control plane and takes snapshots
// with every role: os:admin, os:operator and os:etcd:backup may, os:reader may not.
func TestEtcdClusterAndSnapshots(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.70.2", 3, 1)

	for _, cp := range c.ControlPlanes() {
		out, err := runCLI(t, c, "-n", cp, "etcd", "members")
		require.NoError(t, err, out)
		assert.Equal(t, 3, strings.Count(out, "https://127.0.70."+"")/2, out)
		assert.Equal(t, 3, strings.Count(out, "   true    "), "3 healthy members as %s sees them:\n%s", cp, out)
	}

	// The worker itself answers: it runs no etcd.
	out, err := runCLI(t, c, "-e", "127.0.70.5", "-n", "127.0.70.5", "etcd", "members")
	require.Error(t, err)
	assert.Contains(t, out, "does not run etcd", out)

	dir := t.TempDir()

	for _, role := range []string{"os:admin", "os:operator", "os:etcd:backup", "os:reader"} {
		t.Run(role, func(t *testing.T) {
			talosconfig := filepath.Join(dir, strings.ReplaceAll(role, ":", "-")+"-talosconfig")
			out, err := runCLI(t, c, "-n", "127.0.70.2", "config", "new", talosconfig, "--roles", role)
			require.NoError(t, err, out)

			snapshot := filepath.Join(dir, strings.ReplaceAll(role, ":", "-")+".db")
			out, err = runCLI(t, c, "--talosconfig", talosconfig, "-n", "127.0.70.3", "etcd", "snapshot", snapshot)

			if role == "os:reader" {
				require.Error(t, err)
				assert.Contains(t, out, "PermissionDenied", out)
				assert.NoFileExists(t, snapshot)

				members, err := runCLI(t, c, "--talosconfig", talosconfig, "-n", "127.0.70.3", "etcd", "members")
				assert.NoError(t, err, "any role lists members: %s", members)

				return
			}

			require.NoError(t, err, out)

			info, err := os.Stat(snapshot)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

			status, err := exec.Command(etcdtest.Require(t).Etcdutl, "snapshot", "status", snapshot, "-w", "table").CombinedOutput()
			require.NoError(t, err, string(status))
			t.Logf("%s", status)
		})
	}
}
