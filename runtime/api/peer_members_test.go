package api

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/role"
)

// fakePeers answers for each peer: its members, an error, or no answer until the context ends;
// release, if set, holds every listing until it is closed.
type fakePeers struct {
	members map[string][]string
	errs    map[string]error
	silent  map[string]bool
	release chan struct{}

	mu    sync.Mutex
	asked []string
}

func (f *fakePeers) list(ctx context.Context, peer string) (map[string]bool, error) {
	f.mu.Lock()
	f.asked = append(f.asked, peer)
	f.mu.Unlock()

	if f.release != nil {
		<-f.release
	}

	if f.silent[peer] {
		<-ctx.Done()

		return nil, ctx.Err()
	}

	if err := f.errs[peer]; err != nil {
		return nil, err
	}

	names := map[string]bool{}
	for _, m := range f.members[peer] {
		names[m] = true
	}

	return names, nil
}

func (f *fakePeers) listedCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()

	return len(f.asked)
}

func TestPeerMembersConfirm(t *testing.T) {
	t.Parallel()

	const target = "10.5.0.7"

	for _, tc := range []struct {
		name    string
		peers   []string
		fake    *fakePeers
		allowed bool
		want    []string // substrings of the refusal
		notWant []string
	}{
		{
			name:    "one peer records it",
			peers:   []string{"10.5.0.2", "10.5.0.3"},
			fake:    &fakePeers{members: map[string][]string{"10.5.0.3": {target}}},
			allowed: true,
		},
		{
			name:    "a peer records it while another cannot be asked",
			peers:   []string{"10.5.0.2", "10.5.0.3"},
			fake:    &fakePeers{members: map[string][]string{"10.5.0.3": {target}}, errs: map[string]error{"10.5.0.2": errors.New("refused")}},
			allowed: true,
		},
		{
			name:  "no peer records it",
			peers: []string{"10.5.0.3", "10.5.0.2"},
			fake:  &fakePeers{members: map[string][]string{"10.5.0.2": {"10.5.0.8"}}},
			want: []string{
				"node 10.5.0.7 is not a member of this cluster known to this node or to the control planes it asked (10.5.0.2, 10.5.0.3): not forwarded",
				"`get members` on each",
			},
			notWant: []string{"could not be asked"},
		},
		{
			name:  "no peer to ask",
			want:  []string{"node 10.5.0.7 is not a member of this cluster known to this node: not forwarded", "nodepkid --control-plane"},
			fake:  &fakePeers{},
			peers: nil,
		},
		{
			name:  "a peer cannot be asked",
			peers: []string{"10.5.0.2", "10.5.0.3"},
			fake:  &fakePeers{errs: map[string]error{"10.5.0.3": errors.New("dial tcp: secret detail")}},
			want: []string{
				"or to the control planes it asked (10.5.0.2): not forwarded",
				"control planes that could not be asked: 10.5.0.3 (if the trustd of one of them signed the node's certificate, retry, or address the call through it)",
			},
			notWant: []string{"secret detail"},
		},
		{
			name:    "a peer that does not answer in time",
			peers:   []string{"10.5.0.2", "10.5.0.3"},
			fake:    &fakePeers{silent: map[string]bool{"10.5.0.2": true}},
			want:    []string{"or to the control planes it asked (10.5.0.3)", "could not be asked: 10.5.0.2 "},
			notWant: []string{"deadline"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			synctest.Test(t, func(t *testing.T) {
				p := newPeerMembers(zaptest.NewLogger(t), tc.fake.list, time.Now)

				start := time.Now()
				err := p.confirm(t.Context(), target, tc.peers)

				assert.LessOrEqual(t, time.Since(start), peerLookupTimeout, "the lookup is bounded")

				if tc.allowed {
					require.NoError(t, err)

					return
				}

				require.Error(t, err)
				assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

				for _, w := range tc.want {
					assert.Contains(t, status.Convert(err).Message(), w)
				}

				for _, w := range tc.notWant {
					assert.NotContains(t, status.Convert(err).Message(), w)
				}

				assert.Equal(t, len(tc.peers), tc.fake.listedCount(), "every peer is asked once")
			})
		})
	}
}

func TestPeerMembersCache(t *testing.T) {
	t.Parallel()

	now := time.Date(2026, 11, 29, 22, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }

	fake := &fakePeers{members: map[string][]string{"10.5.0.2": {"10.5.0.7"}}}
	p := newPeerMembers(zaptest.NewLogger(t), fake.list, clock)
	peers := []string{"10.5.0.2"}

	require.NoError(t, p.confirm(t.Context(), "10.5.0.7", peers))
	require.NoError(t, p.confirm(t.Context(), "10.5.0.7", peers))
	assert.Equal(t, 1, fake.listedCount(), "a confirmation is kept")

	require.Error(t, p.confirm(t.Context(), "10.5.0.8", peers))
	require.Error(t, p.confirm(t.Context(), "10.5.0.8", peers))
	assert.Equal(t, 3, fake.listedCount(), "a refusal is not kept")
	assert.Len(t, p.confirmed, 1)

	now = now.Add(peerMemberTTL)
	fake.members = nil

	require.Error(t, p.confirm(t.Context(), "10.5.0.7", peers), "a confirmation expires")
	assert.Empty(t, p.confirmed)
}

func TestPeerMembersBound(t *testing.T) {
	t.Parallel()

	var targets []string
	for i := range maxPeerMembers + 10 {
		targets = append(targets, "10.6."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256))
	}

	fake := &fakePeers{members: map[string][]string{"10.5.0.2": targets}}
	p := newPeerMembers(zaptest.NewLogger(t), fake.list, time.Now)

	for _, target := range targets {
		require.NoError(t, p.confirm(t.Context(), target, []string{"10.5.0.2"}))
	}

	assert.Len(t, p.confirmed, maxPeerMembers)
	assert.Equal(t, maxPeerMembers, p.order.Len())
	assert.NotContains(t, p.confirmed, "10.6.0.0", "the least recently confirmed goes first")
	assert.Contains(t, p.confirmed, "10.6.1.9")
}

// TestPeerMembersShareListings: lookups at the same time (a call to many nodes) list each peer once.
func TestPeerMembersShareListings(t *testing.T) {
	t.Parallel()

	synctest.Test(t, func(t *testing.T) {
		fake := &fakePeers{
			members: map[string][]string{"10.5.0.2": {"10.6.0.1", "10.6.0.2"}, "10.5.0.3": {"10.6.0.3"}},
			release: make(chan struct{}),
		}
		p := newPeerMembers(zaptest.NewLogger(t), fake.list, time.Now)
		peers := []string{"10.5.0.2", "10.5.0.3"}

		var wg sync.WaitGroup

		errs := make([]error, 4)

		for i, target := range []string{"10.6.0.1", "10.6.0.2", "10.6.0.3", "10.6.0.4"} {
			wg.Go(func() { errs[i] = p.confirm(t.Context(), target, peers) })
		}

		synctest.Wait()
		close(fake.release)
		wg.Wait()

		assert.Equal(t, len(peers), fake.listedCount(), "one listing per peer")
		assert.NoError(t, errs[0])
		assert.NoError(t, errs[1])
		assert.NoError(t, errs[2])
		assert.Equal(t, codes.PermissionDenied, status.Code(errs[3]), "%v", errs[3])
	})
}

// recordingListener accepts connections on its address and counts them.
type recordingListener struct {
	net.Listener

	accepted atomic.Int64
}

func (l *recordingListener) serve() {
	for {
		conn, err := l.Accept()
		if err != nil {
			return
		}

		l.accepted.Add(1)
		conn.Close()
	}
}

// TestForwardingThroughPeer: a control plane reaches a worker that only another control plane
// records, over real mutual TLS, and still refuses, without dialing it, an address no control
// plane records.
func TestForwardingThroughPeer(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	lis := listenSamePort(t, "127.0.170.2", "127.0.170.3", "127.0.170.4", "127.0.170.9")

	unknown := &recordingListener{Listener: lis[3]}
	go unknown.serve()

	t.Cleanup(func() { unknown.Close() })

	a := startNode(t, p, nodeSpec{addr: "127.0.170.2", controlPlane: true, lis: lis[0], controlPlanes: []string{"127.0.170.3"}})
	c := startNode(t, p, nodeSpec{addr: "127.0.170.3", controlPlane: true, lis: lis[1], controlPlanes: []string{"127.0.170.2"}})
	startNode(t, p, nodeSpec{addr: "127.0.170.4", lis: lis[2]})

	// Only C's trustd signed for the worker.
	addMember(t, c.st, "127.0.170.4")

	for _, via := range []*testNode{a, c} {
		resp, err := nodeClient(via.dialAs(t, p, role.Reader)).Version(toNode(callCtx(t), "127.0.170.4"), &node.VersionRequest{})
		require.NoError(t, err, "through %s", via.addr)
		assert.Equal(t, "127.0.170.4", resp.GetNode())
		assert.Equal(t, "worker", resp.GetMachineType())
	}

	_, err := nodeClient(a.dialAs(t, p, role.Admin)).Version(toNode(callCtx(t), "127.0.170.9"), &node.VersionRequest{})
	require.Error(t, err)
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	assert.Contains(t, status.Convert(err).Message(), "node 127.0.170.9 is not a member of this cluster known to this node or to the control planes it asked (127.0.170.3")
	// talosctl's one-to-many form: each node is decided on its own.
	resp, err := machineClient(a.dialAs(t, p, role.Reader)).Version(toNodes(callCtx(t), "127.0.170.4", "127.0.170.9"), &emptypb.Empty{})
	require.NoError(t, err)
	require.Len(t, resp.GetMessages(), 2)

	byNode := versionsByNode(resp)

	assert.Empty(t, byNode["127.0.170.4"].GetMetadata().GetError())
	assert.NotEmpty(t, byNode["127.0.170.4"].GetVersion().GetTag())
	assert.Equal(t, int32(codes.PermissionDenied), byNode["127.0.170.9"].GetMetadata().GetStatus().GetCode())

	assert.Zero(t, unknown.accepted.Load(), "an address no control plane records is never dialed")

	// The worker forwards nothing, even to a node a control plane records.
	_, err = nodeClient(dial(t, lis[2].Addr().String(), issueClientCert(t, p.osCA, clientCertSpec{roles: []string{role.Admin}}), p.osCA)).
		Version(toNode(callCtx(t), "127.0.170.3"), &node.VersionRequest{})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
}
