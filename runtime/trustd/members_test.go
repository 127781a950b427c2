package trustd_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	trustdclient "github.com/nodepki/nodepki/pkg/trustd"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/runtime/trustd"
)

func TestServerRecordsMembers(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)

	// A control plane's own record, which a worker's CSR must not overwrite.
	self := cluster.MemberSpec{Addresses: []string{"127.0.90.2"}, Hostname: "cp-1", MachineType: "controlplane", LastSeen: "2025-03-04T05:06:07Z"}
	require.NoError(t, safe.StateModify(t.Context(), cp.state, cluster.NewMember("127.0.90.2"), func(m *cluster.Member) error {
		*m.TypedSpec() = self

		return nil
	}, state.WithUpdateOwner("cluster.SelfMemberController")))

	sign := func(from string, req csrRequest) time.Time {
		t.Helper()

		before := time.Now().Truncate(time.Second)

		_, err := requestFrom(t, addr, cp, from, makeCSR(t, req))
		require.NoError(t, err, "recording a member never fails the signing")

		return before
	}

	member := func(id resource.ID) *cluster.Member {
		t.Helper()

		m, err := safe.StateGetByID[*cluster.Member](t.Context(), cp.state, id)
		require.NoError(t, err)

		return m
	}

	assertSeenSince := func(m *cluster.Member, since time.Time) {
		t.Helper()

		seen, err := time.Parse(time.RFC3339, m.TypedSpec().LastSeen)
		require.NoError(t, err)
		assert.False(t, seen.Before(since), "lastSeen %s is before the signing (%s)", seen, since)
		assert.WithinDuration(t, time.Now(), seen, time.Minute)
	}

	for _, tc := range []struct {
		name string
		req  csrRequest
		id   resource.ID
		want cluster.MemberSpec
	}{
		{
			name: "the requesting address is the ID",
			req:  csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}, ips: []string{"fd00::3", "127.0.90.3"}},
			id:   "127.0.90.3",
			want: cluster.MemberSpec{Addresses: []string{"fd00::3", "127.0.90.3"}, Hostname: "worker-1", MachineType: "worker"},
		},
		{
			name: "another worker",
			req:  csrRequest{commonName: "worker-2", ips: []string{"127.0.90.4"}},
			id:   "127.0.90.4",
			want: cluster.MemberSpec{Addresses: []string{"127.0.90.4"}, Hostname: "worker-2", MachineType: "worker"},
		},
		{
			name: "renewal with a new address list",
			req:  csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}, ips: []string{"127.0.90.3", "10.6.0.3"}},
			id:   "127.0.90.3",
			want: cluster.MemberSpec{Addresses: []string{"127.0.90.3", "10.6.0.3"}, Hostname: "worker-1", MachineType: "worker"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			since := sign(string(tc.id), tc.req)

			m := member(tc.id)
			assert.Equal(t, trustd.MemberOwner, m.Metadata().Owner())
			assertSeenSince(m, since)

			got := *m.TypedSpec()
			got.LastSeen = ""
			assert.Equal(t, tc.want, got)
		})
	}

	// No IP SAN: nothing to reach the node on, nothing recorded.
	sign("127.0.90.5", csrRequest{commonName: "worker-3", dnsNames: []string{"worker-3.example.test"}})

	// A request from the control plane's own address (a process on that host): its record stays.
	sign("127.0.90.2", csrRequest{commonName: "impostor", ips: []string{"127.0.90.2"}})
	assert.Equal(t, self, *member("127.0.90.2").TypedSpec())

	members, err := safe.StateListAll[*cluster.Member](t.Context(), cp.state)
	require.NoError(t, err)

	var ids []resource.ID
	for m := range members.All() {
		ids = append(ids, m.Metadata().ID())
	}

	assert.ElementsMatch(t, []resource.ID{"127.0.90.2", "127.0.90.3", "127.0.90.4"}, ids)
}

// TestMemberIDIsTheRequestingAddress proves that a worker dialing trustd from its node address
// (trustdclient.FromAddress) is recorded under that address even when it is not its first IP SAN.
func TestMemberIDIsTheRequestingAddress(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)
	csr := makeCSR(t, csrRequest{commonName: "worker", ips: []string{"127.0.0.1", "127.0.90.6"}})

	_, _, err := trustdclient.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), machineToken, csr,
		trustdclient.FromAddress(netip.MustParseAddr("127.0.90.6")))
	require.NoError(t, err)

	m, err := safe.StateGetByID[*cluster.Member](t.Context(), cp.state, "127.0.90.6")
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1", "127.0.90.6"}, m.TypedSpec().Addresses)
}

// TestSigningRefreshesAStaleMemberOnly proves that signing again for an unchanged worker seen
// recently writes nothing (retries and restart loops must not rewrite the persisted state), while
// a worker seen long ago, or changed, is written again.
func TestSigningRefreshesAStaleMemberOnly(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)

	for i, tc := range []struct {
		name      string
		seenAgo   time.Duration
		hostname  string
		rewritten bool
	}{
		{name: "seen ten minutes ago", seenAgo: 10 * time.Minute, hostname: "worker-30", rewritten: false},
		{name: "seen two hours ago", seenAgo: 2 * time.Hour, hostname: "worker-31", rewritten: true},
		{name: "hostname changed", seenAgo: time.Minute, hostname: "old-name", rewritten: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("127.0.90.%d", 30+i)
			recorded := cluster.MemberSpec{
				Addresses:   []string{id},
				Hostname:    tc.hostname,
				MachineType: "worker",
				LastSeen:    time.Now().Add(-tc.seenAgo).UTC().Format(time.RFC3339),
			}

			require.NoError(t, safe.StateModify(t.Context(), cp.state, cluster.NewMember(id), func(m *cluster.Member) error {
				*m.TypedSpec() = recorded

				return nil
			}, state.WithUpdateOwner(trustd.MemberOwner)))

			hostname := fmt.Sprintf("worker-%d", 30+i)
			csr := makeCSR(t, csrRequest{commonName: hostname, ips: []string{id}})
			_, err := requestFrom(t, addr, cp, id, csr)
			require.NoError(t, err)

			m, err := safe.StateGetByID[*cluster.Member](t.Context(), cp.state, id)
			require.NoError(t, err)

			if !tc.rewritten {
				assert.Equal(t, recorded, *m.TypedSpec(), "a fresh, unchanged member is not rewritten")

				return
			}

			assert.Equal(t, hostname, m.TypedSpec().Hostname)
			assert.WithinDuration(t, time.Now(), mustParseTime(t, m.TypedSpec().LastSeen), time.Minute)
		})
	}
}

func mustParseTime(t *testing.T, value string) time.Time {
	t.Helper()

	parsed, err := time.Parse(time.RFC3339, value)
	require.NoError(t, err)

	return parsed
}
