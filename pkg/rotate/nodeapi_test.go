package rotate

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/runtime"
	"github.com/nodepki/nodepki/runtime/api"
)

// TestNodeAPIMembers lists the members of a real control plane (runtime and node API on
// 127.0.0.1) through NodeAPI, then makes it look like a node of an older version (no Members
// type): discovery then gets no member and no error.
func TestNodeAPIMembers(t *testing.T) {
	t.Parallel()

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	b, err := bundle.Generate()
	require.NoError(t, err)

	cp, _, err := generate.Generate(generate.Input{ClusterName: "test", Endpoint: "https://127.0.0.1:6443", Bundle: b})
	require.NoError(t, err)

	raw, err := cp.Bytes()
	require.NoError(t, err)

	address := netip.MustParseAddr("127.0.0.1")

	rt, err := runtime.New(runtime.Options{Logger: zaptest.NewLogger(t), Addresses: []netip.Addr{address}, Hostname: "cp-1"})
	require.NoError(t, err)
	require.NoError(t, rt.SetMachineConfig(ctx, raw))

	server, err := api.New(api.Options{State: rt.State(), Config: rt, NodeAddress: address})
	require.NoError(t, err)

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)

	done := make(chan error, 2)

	go func() { done <- rt.Run(ctx) }()
	go func() { done <- server.Serve(ctx, lis) }()

	t.Cleanup(func() {
		cancel()

		for range 2 {
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("node stopped: %v", err)
			}
		}
	})

	require.NoError(t, server.WaitReady(ctx))

	crt, key, err := b.NewClientCertificate([]string{adminRole}, time.Hour)
	require.NoError(t, err)

	endpoint := lis.Addr().String()
	nodeAPI := NewNodeAPI(NodeAPIOptions{Endpoints: []string{endpoint}})

	t.Cleanup(func() { nodeAPI.Close() })

	require.NoError(t, nodeAPI.UseCredentials(ctx, []Credentials{{Name: "admin", CA: b.Certs.OS.Crt, Crt: crt, Key: key}}))

	rtestutils.AssertResource(ctx, t, rt.State(), "127.0.0.1", func(*cluster.Member, *assert.Assertions) {})

	members, err := nodeAPI.Members(ctx, endpoint)
	require.NoError(t, err)
	require.Len(t, members, 1)
	assert.Equal(t, "127.0.0.1", members[0].Address)
	assert.Equal(t, "cp-1", members[0].Hostname)
	assert.Equal(t, "controlplane", members[0].MachineType)
	assert.WithinDuration(t, time.Now(), members[0].LastSeen, time.Minute)

	// An older node has no Members type: the API refuses to list it, which discovery takes as
	// "no member".
	require.NoError(t, rt.State().Destroy(ctx,
		resource.NewMetadata(meta.NamespaceName, meta.ResourceDefinitionType, strings.ToLower(cluster.MemberType), resource.VersionUndefined),
		state.WithDestroyOwner(meta.Owner)))

	members, err = nodeAPI.Members(ctx, endpoint)
	require.NoError(t, err)
	assert.Empty(t, members)

	// Other failures are errors: here the control plane cannot reach the endpoint's host (no
	// node listens there) when it forwards the call.
	_, err = nodeAPI.Members(ctx, "127.0.99.9")
	require.Error(t, err)
}
