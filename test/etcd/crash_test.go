package etcd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/resources/etcd"
)

// TestRollingRestartSurvivesSupervisorCrash kills nodepkid with SIGKILL in the middle of the
// rolling restart of an etcd CA rotation, once on the control plane restarting its member (the
// holder of the restart lock) and, in a second rotation, on another one. Each nodepkid is started
// again at once; the rotation completes (rerun if the crash interrupted it) and the 100 ms probes
// never see two members down at once.
func TestRollingRestartSurvivesSupervisorCrash(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.72.2", 3, 0)
	endpoints := clientEndpoints(c)
	dir := filepath.Join(t.TempDir(), "etcd-client")
	oldCAClient(t, c).write(t, dir)

	for i, victim := range []string{"lock holder", "another control plane"} {
		t.Logf("rotation %d: killing nodepkid on the %s", i+1, victim)

		plan := filepath.Join(t.TempDir(), "plan.yaml")
		args := []string{"--talosconfig", c.Talosconfig, "-e", c.ControlPlanes()[0], "rotate-ca", "--etcd", "--dry-run=false", "--etcd-client-dir", dir, "--plan", plan}

		probes := startProber(t, dir, endpoints)

		var out bytes.Buffer

		rotation := exec.Command(nodepkictl, args...)
		rotation.Stdout, rotation.Stderr = &out, &out
		require.NoError(t, rotation.Start())

		holder := waitRestarting(t, c)
		target := holder

		if i == 1 {
			// Another control plane, not the one rotate-ca calls through.
			others := slices.DeleteFunc(c.ControlPlanes(), func(cp string) bool { return cp == holder || cp == c.ControlPlanes()[0] })
			target = others[0]
		}

		require.NoError(t, c.Kill(target))
		t.Logf("killed nodepkid on %s (restart lock holder %s)", target, holder)
		require.NoError(t, c.Start(target))

		rotationErr := rotation.Wait()
		t.Logf("rotate-ca (err %v):\n%s", rotationErr, out.String())

		if rotationErr != nil {
			t.Logf("rerun:\n%s", waitRotation(t, c, args...))
		}

		require.NoError(t, c.WaitEtcd(t.Context(), testWriter{t}))
		probes.stop()

		if target != holder {
			// etcd outlived its supervisor, which found it again through the pidfile.
			n, err := c.Node(target)
			require.NoError(t, err)

			log, err := os.ReadFile(n.Log)
			require.NoError(t, err)
			assert.Contains(t, string(log), "adopted running etcd")
		}

		t.Logf("probes: %d, fewest members healthy at once: %d, failed probes per member: %v", probes.probes, probes.minAlive, probes.downs)
		assert.GreaterOrEqual(t, probes.minAlive, 2, "two members down at once: %v", probes.worst)
	}
}

// waitRestarting returns the control plane whose etcd member restarts for a trust change (it
// holds the restart lock).
func waitRestarting(t testing.TB, c *cluster.Cluster) string {
	t.Helper()

	cl, err := c.Connect(t.Context())
	require.NoError(t, err)

	defer cl.Close()

	deadline := time.Now().Add(time.Minute)

	for time.Now().Before(deadline) {
		for _, cp := range c.ControlPlanes() {
			st, err := safe.StateGetByID[*etcd.MemberStatus](cl.WithNode(t.Context(), cp), cl.COSI(), etcd.LocalMemberID)
			if err == nil && st.TypedSpec().State == etcd.StateRestarting {
				return cp
			}
		}
	}

	t.Fatal("no etcd member restarted within a minute")

	return ""
}
