package trustd_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/runtime/trustd"
)

func TestServerRecordsMembers(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)

	// A control plane's own record, which a worker's CSR must not overwrite.
	self := cluster.MemberSpec{Addresses: []string{"10.5.0.2"}, Hostname: "cp-1", MachineType: "controlplane", LastSeen: "2025-03-04T05:06:07Z"}
	require.NoError(t, safe.StateModify(t.Context(), cp.state, cluster.NewMember("10.5.0.2"), func(m *cluster.Member) error {
		*m.TypedSpec() = self

		return nil
	}, state.WithUpdateOwner("cluster.SelfMemberController")))

	sign := func(req csrRequest) time.Time {
		t.Helper()

		before := time.Now().Truncate(time.Second)

		_, _, err := trustd.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), machineToken, makeCSR(t, req))
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
			name: "first IP SAN is the ID",
			req:  csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}, ips: []string{"10.5.0.3", "fd00::3"}},
			id:   "10.5.0.3",
			want: cluster.MemberSpec{Addresses: []string{"10.5.0.3", "fd00::3"}, Hostname: "worker-1", MachineType: "worker"},
		},
		{
			name: "IPv6 only",
			req:  csrRequest{commonName: "worker-2", ips: []string{"fd00::4"}},
			id:   "fd00::4",
			want: cluster.MemberSpec{Addresses: []string{"fd00::4"}, Hostname: "worker-2", MachineType: "worker"},
		},
		{
			name: "renewal with a new address list",
			req:  csrRequest{commonName: "worker-1", dnsNames: []string{"worker-1"}, ips: []string{"10.5.0.3", "10.6.0.3"}},
			id:   "10.5.0.3",
			want: cluster.MemberSpec{Addresses: []string{"10.5.0.3", "10.6.0.3"}, Hostname: "worker-1", MachineType: "worker"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			since := sign(tc.req)

			m := member(tc.id)
			assert.Equal(t, trustd.MemberOwner, m.Metadata().Owner())
			assertSeenSince(m, since)

			got := *m.TypedSpec()
			got.LastSeen = ""
			assert.Equal(t, tc.want, got)
		})
	}

	// No IP SAN: nothing to reach the node on, nothing recorded.
	sign(csrRequest{commonName: "worker-3", dnsNames: []string{"worker-3.example.test"}})

	// A CSR naming the control plane's address: signed under the policy, but the control plane's
	// record stays as it is.
	sign(csrRequest{commonName: "impostor", ips: []string{"10.5.0.2"}})
	assert.Equal(t, self, *member("10.5.0.2").TypedSpec())

	members, err := safe.StateListAll[*cluster.Member](t.Context(), cp.state)
	require.NoError(t, err)

	var ids []resource.ID
	for m := range members.All() {
		ids = append(ids, m.Metadata().ID())
	}

	assert.ElementsMatch(t, []resource.ID{"10.5.0.2", "10.5.0.3", "fd00::4"}, ids)
}

// TestMemberIDIsTheRequestingAddress proves that a worker dialing trustd from its node address
// (trustd.FromAddress) is recorded under that address even when it is not its first IP SAN.
func TestMemberIDIsTheRequestingAddress(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)
	csr := makeCSR(t, csrRequest{commonName: "worker", ips: []string{"127.0.0.1", "127.0.55.3"}})

	_, _, err := trustd.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), machineToken, csr,
		trustd.FromAddress(netip.MustParseAddr("127.0.55.3")))
	require.NoError(t, err)

	m, err := safe.StateGetByID[*cluster.Member](t.Context(), cp.state, "127.0.55.3")
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1", "127.0.55.3"}, m.TypedSpec().Addresses)
}
