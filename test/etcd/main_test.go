package etcd

import (
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/pkg/etcd/etcdtest"
	"github.com/nodepki/nodepki/test/testbin"
)

// The binaries under test, built by TestMain; the etcd binaries come from etcdtest.Require.
var (
	nodepkid   string
	nodepkictl string
)

func TestMain(m *testing.M) {
	testbin.Main(m, "etcd", func(b testbin.Binaries) error {
		nodepkid, nodepkictl = b.Nodepkid, b.Nodepkictl

		return nil
	})
}

// startCluster creates a local cluster whose control planes run etcd; it is destroyed when the test ends.
func startCluster(t testing.TB, first string, controlPlanes, workers int) *cluster.Cluster {
	t.Helper()

	etcdBinaries := etcdtest.Require(t)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	c, err := cluster.Create(ctx, cluster.Options{
		Name:          "etcd",
		ControlPlanes: controlPlanes,
		Workers:       workers,
		Dir:           filepath.Join(t.TempDir(), "cluster"),
		Daemon:        nodepkid,
		FirstAddress:  netip.MustParseAddr(first),
		ReadyTimeout:  2 * time.Minute,
		EtcdBinary:    etcdBinaries.Etcd,
		Progress:      testWriter{t},
	})
	if c != nil {
		t.Cleanup(func() {
			if err := c.Destroy(); err != nil {
				t.Errorf("destroying the cluster: %v", err)
			}
		})
	}

	require.NoError(t, err)

	return c
}

// runCLI runs nodepkictl with the cluster's talosconfig (or the one given first as
// "--talosconfig", path) and returns its combined output.
func runCLI(t testing.TB, c *cluster.Cluster, args ...string) (string, error) {
	t.Helper()

	if len(args) < 2 || args[0] != "--talosconfig" {
		args = append([]string{"--talosconfig", c.Talosconfig}, args...)
	}

	out, err := exec.Command(nodepkictl, args...).CombinedOutput()

	return string(out), err
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))

	return len(p), nil
}
