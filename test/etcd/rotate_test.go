package etcd

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/cluster"
	etcdpkg "github.com/nodepki/nodepki/pkg/etcd"
)

func clientEndpoints(c *cluster.Cluster) []string {
	var out []string

	for _, cp := range c.ControlPlanes() {
		out = append(out, "https://"+cp+":2379")
	}

	return out
}

// TestRotateEtcdCAUnderLoad rotates the etcd CA of 3 real etcd members (and a worker) while a
// client puts and gets through every member with the credentials rotate-ca keeps in
// --etcd-client-dir, and a prober checks every member's health every 100 ms: no probe may see
// fewer than 2 of 3 members healthy (no two members down at once, no quorum loss), every
// acknowledged put is readable afterwards, and a client certificate of the old CA is then
// refused by every member.
func TestRotateEtcdCAUnderLoad(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.71.2", 3, 1)
	endpoints := clientEndpoints(c)

	old := oldCAClient(t, c)
	dir := filepath.Join(t.TempDir(), "etcd-client")
	old.write(t, dir)

	probes := startProber(t, dir, endpoints)
	l := startLoad(t, dir, endpoints)

	start := time.Now()
	// Through the first control plane: the worker got its certificate from it (the first trustd
	// endpoint) and is a member it knows.
	out, err := runCLI(t, c, "-e", c.ControlPlanes()[0], "rotate-ca", "--etcd", "--dry-run=false", "--etcd-client-dir", dir)
	elapsed := time.Since(start)

	l.stop()
	probes.stop()

	require.NoError(t, err, out)
	t.Logf("rotation took %s:\n%s", elapsed.Round(time.Millisecond), out)
	t.Logf("load: %d operations, %d failed (last: %v), %d credential sets", l.ok.Load(), l.failed.Load(), l.lastErr.Load(), l.gens)
	t.Logf("probes: %d, fewest members healthy at once: %d, failed probes per member: %v", probes.probes, probes.minAlive, probes.downs)

	assert.GreaterOrEqual(t, probes.minAlive, 2, "two members down at once: %v", probes.worst)
	assert.Greater(t, probes.probes, 10)
	// The transitional credentials may last less than one operation of the load.
	assert.GreaterOrEqual(t, l.gens, 2, "the load followed the credentials rotate-ca wrote")
	assert.Equal(t, 3, strings.Count(out, "old CA client refused"), "rotate-ca checked the old CA on every member")

	final := newFollowingClient(dir, endpoints)
	require.NoError(t, final.refresh())
	assert.True(t, final.files.equal(l.files), "the load ended with the final credentials")

	defer final.close()

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	for i, key := range l.acked {
		resp, err := final.clients[i%3].Get(ctx, key)
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1, "acknowledged put %s is lost", key)
	}

	t.Logf("%d acknowledged puts all readable", len(l.acked))

	// The old CA is gone from every member: its client certificate is refused.
	tlsConfig, err := etcdpkg.TLSConfig(append(old.ca, final.files.ca...), old.crt, old.key)
	require.NoError(t, err)

	for _, endpoint := range endpoints {
		client, err := etcdpkg.NewClient([]string{endpoint}, tlsConfig)
		require.NoError(t, err)

		h := etcdpkg.Status(ctx, client, endpoint, 3*time.Second)
		client.Close()

		assert.Error(t, h.Err, "%s accepts a client certificate of the old etcd CA", endpoint)
	}
}

func waitRotation(t testing.TB, c *cluster.Cluster, args ...string) string {
	t.Helper()

	var out string

	// A rotation interrupted by a node crash is resumed by running it again.
	for attempt := range 3 {
		o, err := runCLI(t, c, args...)
		out += fmt.Sprintf("--- attempt %d\n%s", attempt+1, o)

		if err == nil {
			return out
		}
	}

	t.Fatalf("rotation did not complete:\n%s", out)

	return ""
}
