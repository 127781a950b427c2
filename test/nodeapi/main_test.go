// Package nodeapi_test proves the node daemon and its API with real nodepkid processes: local
// clusters on 127.0.x.y loopback addresses, reached with real TLS clients, openssl and talosctl's
// own client library.
package nodeapi_test

import (
	"context"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/test/testbin"
)

var binDir string

func TestMain(m *testing.M) {
	testbin.Main(m, "nodeapi", func(b testbin.Binaries) error {
		binDir = b.Dir

		return nil
	})
}

// startCluster creates a local cluster of real processes, one control plane and workers, whose
// first node is firstAddress; it is destroyed when the test ends.
func startCluster(t testing.TB, firstAddress string, workers int) *cluster.Cluster {
	t.Helper()

	return startClusterOf(t, firstAddress, 1, workers)
}

// startClusterOf is startCluster with controlPlanes control planes (the first nodes).
func startClusterOf(t testing.TB, firstAddress string, controlPlanes, workers int) *cluster.Cluster {
	t.Helper()

	dir := t.TempDir()

	c, err := cluster.Create(t.Context(), cluster.Options{
		Name:          "test",
		ControlPlanes: controlPlanes,
		Workers:       workers,
		Dir:           filepath.Join(dir, "cluster"),
		Daemon:        filepath.Join(binDir, "nodepkid"),
		FirstAddress:  netip.MustParseAddr(firstAddress),
		ReadyTimeout:  30 * time.Second,
	})
	if c != nil {
		t.Cleanup(func() {
			if t.Failed() {
				for _, n := range c.Nodes {
					if log, err := os.ReadFile(n.Log); err == nil {
						t.Logf("log of %s:\n%s", n.Name, log)
					}
				}
			}

			require.NoError(t, c.Destroy())
		})
	}

	require.NoError(t, err)

	return c
}

func loadBundle(t testing.TB, c *cluster.Cluster) *bundle.Bundle {
	t.Helper()

	b, err := bundle.Load(filepath.Join(c.Dir, "secrets.yaml"))
	require.NoError(t, err)

	return b
}

func ctl(t *testing.T, ctx context.Context, args ...string) (string, error) {
	t.Helper()

	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "nodepkictl"), args...).CombinedOutput()

	return string(out), err
}
