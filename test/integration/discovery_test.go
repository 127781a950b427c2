package integration

import (
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/pkg/rotate"
)

// TestRotateDiscoversNodes rotates a cluster whose talosconfig context lists no node, without
// --nodes: rotate-ca finds the control plane and both workers through the control plane's
// members (itself, and the workers its trustd signed for) and rotates all three. The members
// survive a restart of the control plane.
func TestRotateDiscoversNodes(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.14.2", 1, 2)

	cfg, err := clientconfig.Open(c.Talosconfig)
	require.NoError(t, err)

	cfg.Contexts[cfg.Context].Nodes = nil
	require.NoError(t, cfg.Save(c.Talosconfig))

	assertMembers(t, c)

	out, err := runCLI(t, c, "rotate-ca", "--dry-run=false")
	require.NoError(t, err, out)
	t.Logf("rotation:\n%s", out)

	assert.Contains(t, out, "nodes discovered through the endpoints)")
	assert.Contains(t, out, "nodes discovered through the endpoints: 127.0.14.2 (controlplane), 127.0.14.3 (worker), 127.0.14.4 (worker)")
	assert.NotContains(t, out, "stale member")
	assert.NotContains(t, out, "context's nodes")

	for _, node := range c.Addresses() {
		assert.Contains(t, out, "- "+node+": OK", "%s went through the preflight", node)
	}

	plan, err := rotate.LoadPlan(filepath.Join(c.Dir, rotate.DefaultPlanName))
	require.NoError(t, err)
	require.NotNil(t, plan.Completed)

	assertConverged(t, c, plan)

	after, err := clientconfig.Open(c.Talosconfig)
	require.NoError(t, err)
	assert.Empty(t, after.Contexts[after.Context].Nodes, "rotate-ca keeps the context as it was, without nodes")

	// The control plane's members are persisted: after a restart it still knows both workers.
	controlPlane := c.ControlPlanes()[0]
	require.NoError(t, c.Stop(controlPlane))
	require.NoError(t, c.Start(controlPlane))

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	require.NoError(t, c.WaitReady(ctx, io.Discard))

	assertMembers(t, c)
}

// assertMembers checks that `nodepkictl get members` (through the endpoint, the context listing no
// node) shows every node of the cluster with its machine type and a lastSeen.
func assertMembers(t *testing.T, c *cluster.Cluster) {
	t.Helper()

	out, err := runCLI(t, c, "get", "members")
	require.NoError(t, err, out)
	t.Logf("get members:\n%s", out)

	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 1+len(c.Nodes), "a header and one row per node:\n%s", out)
	assert.Equal(t, []string{"NODE", "NAMESPACE", "TYPE", "ID", "VERSION", "HOSTNAME", "MACHINE-TYPE", "ADDRESSES", "LAST-SEEN"}, strings.Fields(lines[0]))

	for _, n := range c.Nodes {
		row := memberRow(lines[1:], n.Address)
		require.NotNil(t, row, "no member %s:\n%s", n.Address, out)

		// NODE NAMESPACE TYPE ID VERSION HOSTNAME MACHINE-TYPE ADDRESSES LAST-SEEN
		require.Len(t, row, 9, "%v", row)
		assert.Equal(t, "cluster", row[1])
		assert.Equal(t, "Member", row[2])
		assert.Equal(t, n.Type, row[6], "%s", n.Address)
		assert.Equal(t, `["`+n.Address+`"]`, row[7])

		seen, err := time.Parse(time.RFC3339, row[8])
		require.NoError(t, err, "lastSeen of %s", n.Address)
		assert.WithinDuration(t, time.Now(), seen, 10*time.Minute)
	}
}

// memberRow returns the fields of the row whose ID is id.
func memberRow(rows []string, id string) []string {
	for _, line := range rows {
		if fields := strings.Fields(line); len(fields) > 3 && fields[3] == id {
			return fields
		}
	}

	return nil
}
