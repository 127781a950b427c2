package cluster_test

import (
	"sync"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	ctrlcluster "github.com/nodepki/nodepki/controllers/cluster"
	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/network"
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()

	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()

	c.now = c.now.Add(d)
}

func setAddresses(t *testing.T, env *ctest.Env, addresses ...string) {
	t.Helper()

	require.NoError(t, safe.StateModify(env.Ctx, env.State, network.NewNodeAddresses(network.CurrentID), func(res *network.NodeAddresses) error {
		res.TypedSpec().Addresses = addresses

		return nil
	}))
}

func getMember(t *testing.T, env *ctest.Env, id resource.ID) *cluster.Member {
	t.Helper()

	m, err := safe.StateGetByID[*cluster.Member](env.Ctx, env.State, id)
	require.NoError(t, err)

	return m
}

func TestSelfMemberFollowsTheNode(t *testing.T) {
	t.Parallel()

	start := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	clk := &clock{now: start}
	env := ctest.Run(t, &ctrlcluster.SelfMemberController{Hostname: "cp-1", Clock: clk.Now})

	secrets := ctest.NewSecrets(t)
	doc := ctest.ControlPlane(secrets)

	// Without addresses, nothing is recorded.
	env.SetMachineConfig(t, doc)
	setAddresses(t, env)
	require.Never(t, func() bool {
		list, err := safe.StateListAll[*cluster.Member](env.Ctx, env.State)

		return err != nil || list.Len() > 0
	}, 200*time.Millisecond, 20*time.Millisecond, "recorded without an address")

	setAddresses(t, env, "10.5.0.2", "2001:db8::2")

	rtestutils.AssertResource(env.Ctx, t, env.State, "10.5.0.2", func(m *cluster.Member, a *assert.Assertions) {
		a.Equal(cluster.MemberSpec{
			Addresses:   []string{"10.5.0.2", "2001:db8::2"},
			Hostname:    "cp-1",
			MachineType: "controlplane",
			LastSeen:    "2025-03-04T05:06:07Z",
		}, *m.TypedSpec())
		a.Equal("cluster.SelfMemberController", m.Metadata().Owner())
	})

	recorded := getMember(t, env, "10.5.0.2").Metadata().Version()

	// A reconcile within the refresh interval writes nothing: the config changes, the clock moves
	// on by less than 12 h.
	clk.Advance(11 * time.Hour)

	doc.Machine.CertSANs = []string{"cp.example.test"}
	env.SetMachineConfig(t, doc)
	setAddresses(t, env, "10.5.0.2", "2001:db8::2", "2001:db8::3")

	rtestutils.AssertResource(env.Ctx, t, env.State, "10.5.0.2", func(m *cluster.Member, a *assert.Assertions) {
		a.Equal([]string{"10.5.0.2", "2001:db8::2", "2001:db8::3"}, m.TypedSpec().Addresses)
	})
	// The address change is a change: lastSeen moves with it.
	assert.Equal(t, start.Add(11*time.Hour).Format(time.RFC3339), getMember(t, env, "10.5.0.2").TypedSpec().LastSeen)
	assert.NotEqual(t, recorded, getMember(t, env, "10.5.0.2").Metadata().Version())

	recorded = getMember(t, env, "10.5.0.2").Metadata().Version()

	clk.Advance(time.Hour)
	doc.Machine.CertSANs = []string{"cp2.example.test"}
	env.SetMachineConfig(t, doc)
	require.Never(t, func() bool {
		m, err := safe.StateGetByID[*cluster.Member](env.Ctx, env.State, "10.5.0.2")

		return err != nil || !m.Metadata().Version().Equal(recorded)
	}, 300*time.Millisecond, 20*time.Millisecond, "an unchanged member was rewritten")

	// Past the refresh interval, the next pass renews lastSeen.
	clk.Advance(12 * time.Hour)
	doc.Machine.CertSANs = []string{"cp3.example.test"}
	env.SetMachineConfig(t, doc)

	rtestutils.AssertResource(env.Ctx, t, env.State, "10.5.0.2", func(m *cluster.Member, a *assert.Assertions) {
		a.Equal(start.Add(24*time.Hour).Format(time.RFC3339), m.TypedSpec().LastSeen)
	})

	// A new first address is a new member; the old one goes.
	setAddresses(t, env, "10.5.0.1", "10.5.0.2")

	rtestutils.AssertResource(env.Ctx, t, env.State, "10.5.0.1", func(m *cluster.Member, a *assert.Assertions) {
		a.Equal([]string{"10.5.0.1", "10.5.0.2"}, m.TypedSpec().Addresses)
	})
	rtestutils.AssertNoResource[*cluster.Member](env.Ctx, t, env.State, "10.5.0.2")

	// A worker does not record itself.
	env.SetMachineConfig(t, ctest.Worker(secrets))
	rtestutils.AssertNoResource[*cluster.Member](env.Ctx, t, env.State, "10.5.0.1")
}

func TestSelfMemberRefreshTimer(t *testing.T) {
	t.Parallel()

	// lastSeen has second resolution: with a 1 s interval, every refresh changes it.
	env := ctest.Run(t, &ctrlcluster.SelfMemberController{Hostname: "cp-1", RefreshInterval: time.Second})

	setAddresses(t, env, "10.5.0.2")
	env.SetMachineConfig(t, ctest.ControlPlane(ctest.NewSecrets(t)))

	rtestutils.AssertResource(env.Ctx, t, env.State, "10.5.0.2", func(m *cluster.Member, a *assert.Assertions) {
		a.NotEmpty(m.TypedSpec().LastSeen)
	})

	first := getMember(t, env, "10.5.0.2").TypedSpec().LastSeen

	// Nothing changes but time: the timer renews lastSeen.
	rtestutils.AssertResource(env.Ctx, t, env.State, "10.5.0.2", func(m *cluster.Member, a *assert.Assertions) {
		a.Greater(m.TypedSpec().LastSeen, first)
	})
}

func TestSelfMemberLeavesOtherWritersAlone(t *testing.T) {
	t.Parallel()

	env := ctest.Run(t, &ctrlcluster.SelfMemberController{Hostname: "cp-1"})

	// trustd's records: a worker, and one whose CSR named this node's address.
	workers := map[resource.ID]cluster.MemberSpec{
		"10.5.0.2": {Addresses: []string{"10.5.0.2"}, Hostname: "impostor", MachineType: "worker", LastSeen: "2025-03-04T05:06:07Z"},
		"10.5.0.7": {Addresses: []string{"10.5.0.7"}, Hostname: "worker-1", MachineType: "worker", LastSeen: "2025-03-04T05:06:07Z"},
	}

	for id, spec := range workers {
		require.NoError(t, safe.StateModify(env.Ctx, env.State, cluster.NewMember(id), func(m *cluster.Member) error {
			*m.TypedSpec() = spec

			return nil
		}, state.WithUpdateOwner("trustd")))
	}

	env.SetMachineConfig(t, ctest.ControlPlane(ctest.NewSecrets(t)))
	setAddresses(t, env, "10.5.0.2", "10.5.0.3")

	require.Never(t, func() bool {
		list, err := safe.StateListAll[*cluster.Member](env.Ctx, env.State)
		if err != nil || list.Len() != len(workers) {
			return true
		}

		for m := range list.All() {
			if m.Metadata().Owner() != "trustd" || !assert.ObjectsAreEqual(workers[m.Metadata().ID()], *m.TypedSpec()) {
				return true
			}
		}

		return false
	}, 300*time.Millisecond, 20*time.Millisecond, "trustd's members were changed, or the control plane recorded itself")
}
