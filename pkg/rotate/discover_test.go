package rotate

import (
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// TestDiscoveredNodesAreRotated rotates a cluster of two control planes and two workers without a
// node list: each control plane knows itself and the workers it signed for, one of them also a
// worker long gone. Every live node is rotated; the stale member is reported and left out (the
// fake has no such node, so including it would fail the preflight).
func TestDiscoveredNodesAreRotated(t *testing.T) {
	t.Parallel()

	c := newTestCluster(t, 2, 2) // 10.0.0.1-2 control planes, 10.0.0.3-4 workers
	now := time.Now()

	c.fake.members = map[string][]Member{
		"10.0.0.1": {
			{Address: "10.0.0.1", MachineType: machineconfig.TypeControlPlane, LastSeen: now.Add(-11 * time.Hour)},
			{Address: "10.0.0.4", MachineType: machineconfig.TypeWorker, LastSeen: now.Add(-60 * time.Hour)},
			{Address: "10.0.0.9", MachineType: machineconfig.TypeWorker, LastSeen: now.Add(-72 * time.Hour)},
		},
		"10.0.0.2": {
			{Address: "10.0.0.2", MachineType: machineconfig.TypeControlPlane, LastSeen: now},
			{Address: "10.0.0.3", MachineType: machineconfig.TypeWorker, LastSeen: now.Add(-47 * time.Hour)},
			// Renewed here since: the freshest record counts.
			{Address: "10.0.0.4", MachineType: machineconfig.TypeWorker, LastSeen: now.Add(-time.Hour)},
		},
	}

	r := newRun(t, c, RootOS)
	r.opts.Nodes = nil
	r.opts.Endpoints = []string{"10.0.0.1", "10.0.0.2"}
	r.opts.Now = func() time.Time { return now }

	out, err := r.exec(t)
	require.NoError(t, err, out)

	assert.Contains(t, out, "nodes discovered through the endpoints")
	assert.Contains(t, out, "- 10.0.0.9: stale member, last seen "+now.Add(-72*time.Hour).UTC().Format(time.RFC3339)+" (72h0m0s ago), left out; pass -n to include it")
	assert.Contains(t, out, "nodes discovered through the endpoints: 10.0.0.1 (controlplane), 10.0.0.2 (controlplane), 10.0.0.3 (worker), 10.0.0.4 (worker)")
	assert.NotContains(t, out, "10.0.0.4: stale")

	plan := r.loadPlan(t)
	require.NotNil(t, plan.Completed)

	for _, name := range c.nodes {
		rc, err := readRoot(c.fake.configOf(name).Document(), RootOS)
		require.NoError(t, err)
		assert.Equal(t, plan.Roots.OS.New.Fingerprint, rc.issuingFingerprint, "%s was not rotated", name)
	}
}

func TestDiscoveryFallsBackToTheContextNodes(t *testing.T) {
	t.Parallel()

	stale := time.Now().Add(-49 * time.Hour)

	for _, tc := range []struct {
		name    string
		members map[string][]Member
		// noFallback leaves the context without nodes.
		noFallback bool
		// want is in the output, or in the error when wantErr.
		want    string
		wantErr bool
	}{
		{
			name:    "older nodes record no member",
			members: map[string][]Member{},
			want:    "no node discovered through the endpoints (nodes of an older version record no cluster members): using the context's nodes 10.0.0.1, 10.0.0.2, 10.0.0.3",
		},
		{
			name:    "only stale members",
			members: map[string][]Member{"10.0.0.1": {{Address: "10.0.0.1", MachineType: machineconfig.TypeControlPlane, LastSeen: stale}}},
			want:    "using the context's nodes 10.0.0.1, 10.0.0.2, 10.0.0.3",
		},
		{
			name:       "nothing to fall back to",
			members:    map[string][]Member{},
			noFallback: true,
			want:       "no nodes: none discovered through the endpoints",
			wantErr:    true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			c := newTestCluster(t, 1, 2)
			c.fake.members = tc.members

			r := newRun(t, c, RootOS)
			r.opts.Nodes = nil
			r.opts.DryRun = true

			if !tc.noFallback {
				r.opts.FallbackNodes = c.nodes
			}

			out, err := r.exec(t)

			if tc.wantErr {
				require.Error(t, err, out)
				assert.Contains(t, err.Error(), tc.want)

				return
			}

			require.NoError(t, err, out)
			assert.Contains(t, out, tc.want)

			// Every node of the context went through the preflight.
			for _, name := range c.nodes {
				assert.Contains(t, out, "- "+name+": OK")
			}
		})
	}
}

// TestDiscoveryNeedsEveryEndpoint refuses to rotate when an endpoint cannot be asked: the workers
// only it signed for would be left out, and they would stop trusting the others at the retire step.
func TestDiscoveryNeedsEveryEndpoint(t *testing.T) {
	t.Parallel()

	c := newTestCluster(t, 2, 1)
	c.fake.unreachable["10.0.0.2"] = true

	r := newRun(t, c, RootOS)
	r.opts.Nodes = nil
	r.opts.FallbackNodes = c.nodes
	r.opts.Endpoints = []string{"10.0.0.1", "10.0.0.2"}

	out, err := r.exec(t)
	require.Error(t, err, out)
	assert.Contains(t, err.Error(), "listing the cluster members on endpoint 10.0.0.2")
	assert.Contains(t, err.Error(), "pass --nodes")
	assert.Zero(t, c.fake.applies, "nothing may change")

	_, statErr := os.Stat(r.plan)
	assert.ErrorIs(t, statErr, os.ErrNotExist, "no plan is written before the nodes are known")
}

// TestExplicitNodesSkipDiscovery: with a node list, the nodes are not discovered and the intro
// names them; the members are asked for once, only to tell the control planes (see keyship.go).
func TestExplicitNodesSkipDiscovery(t *testing.T) {
	t.Parallel()

	c := newTestCluster(t, 1, 1)

	r := newRun(t, c, RootOS)
	r.opts.DryRun = true

	out, err := r.exec(t)
	require.NoError(t, err, out)
	assert.Contains(t, out, "nodes 10.0.0.1, 10.0.0.2)")
	assert.NotContains(t, out, "discovered")
	assert.Equal(t, 1, c.fake.membersCalls)
}
