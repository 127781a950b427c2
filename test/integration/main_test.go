package integration

import (
	"bytes"
	"context"
	"net/netip"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/test/testbin"
)

// The binaries under test, built by TestMain.
var (
	nodepkid   string
	nodepkictl string
)

func TestMain(m *testing.M) {
	testbin.Main(m, "integration", func(b testbin.Binaries) error {
		nodepkid, nodepkictl = b.Nodepkid, b.Nodepkictl

		return nil
	})
}

// startCluster creates a local cluster of real nodepkid processes on addresses from first; it is
// destroyed when the test ends.
func startCluster(t testing.TB, first string, controlPlanes, workers int) *cluster.Cluster {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	c, err := cluster.Create(ctx, cluster.Options{
		Name:          "it",
		ControlPlanes: controlPlanes,
		Workers:       workers,
		Dir:           filepath.Join(t.TempDir(), "cluster"),
		Daemon:        nodepkid,
		FirstAddress:  netip.MustParseAddr(first),
		ReadyTimeout:  90 * time.Second,
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

// nodepkictlCmd prepares a nodepkictl run with the cluster's talosconfig.
func nodepkictlCmd(c *cluster.Cluster, args ...string) *exec.Cmd {
	return exec.Command(nodepkictl, append([]string{"--talosconfig", c.Talosconfig}, args...)...)
}

// runCLI runs nodepkictl to the end and returns its combined output.
func runCLI(t testing.TB, c *cluster.Cluster, args ...string) (string, error) {
	t.Helper()

	out, err := nodepkictlCmd(c, args...).CombinedOutput()

	return string(out), err
}

// connect opens a client with the talosconfig at path, through the given endpoints.
func connect(t testing.TB, path string, endpoints ...string) *client.Client {
	t.Helper()

	cfg, err := clientconfig.Open(path)
	require.NoError(t, err)

	c, err := client.New(t.Context(), client.ClientOptions{Config: cfg, Endpoints: endpoints})
	require.NoError(t, err)

	t.Cleanup(func() { c.Close() })

	return c
}

// syncBuffer is a bytes.Buffer safe for a writer process and a reading test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.buf.String()
}
