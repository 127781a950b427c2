package api

import (
	"context"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/pki"
)

func toNode(ctx context.Context, nodes ...string) context.Context {
	for _, n := range nodes {
		ctx = metadata.AppendToOutgoingContext(ctx, NodeMetadataKey, n)
	}

	return ctx
}

func TestForwarding(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	lisA, lisB := listenPair(t)
	a := startNode(t, p, nodeSpec{addr: "127.0.0.2", controlPlane: true, lis: lisA, controlPlanes: []string{"127.0.0.4"}})
	b := startNode(t, p, nodeSpec{addr: "127.0.0.3", lis: lisB})

	// A forwards to the members it records (and the control planes it is given) only.
	addMember(t, a.st, "127.0.0.3")

	adminViaA := a.dialAs(t, p, role.Admin)
	readerViaA := a.dialAs(t, p, role.Reader)

	t.Run("version is answered by the addressed node", func(t *testing.T) {
		for _, tc := range []struct {
			name     string
			ctx      context.Context
			wantNode string
			wantType string
		}{
			{"no node metadata", callCtx(t), "127.0.0.2", "controlplane"},
			{"this node", toNode(callCtx(t), "127.0.0.2"), "127.0.0.2", "controlplane"},
			{"an address only NodeAddresses lists", toNode(callCtx(t), extraAddress(a.addr)), "127.0.0.2", "controlplane"},
			{"other node", toNode(callCtx(t), "127.0.0.3"), "127.0.0.3", "worker"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := nodeClient(adminViaA).Version(tc.ctx, &node.VersionRequest{})
				require.NoError(t, err)
				assert.Equal(t, tc.wantNode, resp.GetNode())
				assert.Equal(t, tc.wantType, resp.GetMachineType())
			})
		}
	})

	t.Run("resources come from the addressed node", func(t *testing.T) {
		cs, err := safe.StateGetByID[*pki.CertificateStatus](toNode(callCtx(t), "127.0.0.3"), cosiState(readerViaA), pki.CertAPI)
		require.NoError(t, err)
		assert.Equal(t, "node 127.0.0.3", cs.TypedSpec().Subject)

		cs, err = safe.StateGetByID[*pki.CertificateStatus](callCtx(t), cosiState(readerViaA), pki.CertAPI)
		require.NoError(t, err)
		assert.Equal(t, "node 127.0.0.2", cs.TypedSpec().Subject)
	})

	t.Run("the caller's roles are kept", func(t *testing.T) {
		_, err := safe.StateGetByID[*pki.RootSecret](toNode(callCtx(t), "127.0.0.3"), cosiState(readerViaA), pki.RootOS)
		require.Error(t, err)
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

		rs, err := safe.StateGetByID[*pki.RootSecret](toNode(callCtx(t), "127.0.0.3"), cosiState(adminViaA), pki.RootOS)
		require.NoError(t, err)
		assert.Empty(t, rs.TypedSpec().IssuingKey, "B is a worker: its OS root has no key")

		_, err = nodeClient(a.dialAs(t, p, role.EtcdBackup)).ApplyConfiguration(toNode(callCtx(t), "127.0.0.3"),
			&node.ApplyConfigurationRequest{Data: p.worker})
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	})

	t.Run("a worker does not forward", func(t *testing.T) {
		adminViaB := b.dialAs(t, p, role.Admin)

		_, err := nodeClient(adminViaB).Version(toNode(callCtx(t), "127.0.0.2"), &node.VersionRequest{})
		require.Error(t, err)
		assert.Equal(t, codes.PermissionDenied, status.Code(err))
		assert.Contains(t, err.Error(), "no request forwarding on this node (worker)")

		resp, err := nodeClient(adminViaB).Version(toNode(callCtx(t), "127.0.0.3"), &node.VersionRequest{})
		require.NoError(t, err)
		assert.Equal(t, "127.0.0.3", resp.GetNode())
	})

	t.Run("bad node metadata", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			ctx  context.Context
			want string
		}{
			{"two nodes", toNode(callCtx(t), "127.0.0.2", "127.0.0.3"), "node metadata must be single-valued"},
			{
				"nodes with two values", metadata.AppendToOutgoingContext(callCtx(t), NodesMetadataKey, "127.0.0.2", NodesMetadataKey, "127.0.0.3"),
				"one-to-many calls are not supported",
			},
			{
				"node and nodes", metadata.AppendToOutgoingContext(toNode(callCtx(t), "127.0.0.3"), NodesMetadataKey, "127.0.0.3"),
				"either node or nodes",
			},
			{"with a port", toNode(callCtx(t), "127.0.0.3:50000"), "is not an address or a host name"},
			{"empty", toNode(callCtx(t), ""), "is not an address or a host name"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := nodeClient(adminViaA).Version(tc.ctx, &node.VersionRequest{})
				require.Error(t, err)
				assert.Equal(t, codes.InvalidArgument, status.Code(err))
				assert.Contains(t, err.Error(), tc.want)
			})
		}
	})

	t.Run("an unreachable node is not answered locally, with a generic error", func(t *testing.T) {
		_, err := nodeClient(adminViaA).Version(toNode(callCtx(t), "127.0.0.4"), &node.VersionRequest{})
		require.Error(t, err)
		assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
		assert.Equal(t, "node 127.0.0.4 cannot be reached", status.Convert(err).Message(), "no dial or TLS detail leaks")
	})

	t.Run("an address that is not a member is not dialed", func(t *testing.T) {
		for _, target := range []string{"127.0.90.99", "10.1.2.3", "example.com"} {
			_, err := nodeClient(adminViaA).Version(toNode(callCtx(t), target), &node.VersionRequest{})
			require.Error(t, err)
			assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), "node "+target+" is not a member of this cluster known to this node: not forwarded")
			assert.NotContains(t, status.Convert(err).Message(), "dial")
		}
	})

	t.Run("forwarding follows the client certificate", func(t *testing.T) {
		require.NoError(t, a.st.Destroy(t.Context(), pki.NewNodeCertificate(pki.CertAPIClient).Metadata()))

		eventually(t, func() error {
			_, err := nodeClient(adminViaA).Version(toNode(callCtx(t), "127.0.0.3"), &node.VersionRequest{})
			if status.Code(err) != codes.PermissionDenied {
				return errNotYet
			}

			return nil
		})

		// A node whose forwarding certificate is not trusted by the target gets the target's answer.
		crt, key, err := newTestCA(t).Issue(impersonatorProfile(), time.Now())
		require.NoError(t, err)
		createNodeCert(t, a.st, pki.CertAPIClient, crt, key)

		eventually(t, func() error {
			_, err := nodeClient(adminViaA).Version(toNode(callCtx(t), "127.0.0.3"), &node.VersionRequest{})
			if status.Code(err) != codes.Unauthenticated {
				return errNotYet
			}

			return nil
		})
	})
}

func TestTargetNode(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name    string
		md      metadata.MD
		want    string
		wantErr codes.Code
	}{
		{"none", metadata.MD{}, "", codes.OK},
		{"address", metadata.Pairs(NodeMetadataKey, "10.0.0.1"), "10.0.0.1", codes.OK},
		{"mapped IPv4", metadata.Pairs(NodeMetadataKey, "::ffff:10.0.0.1"), "10.0.0.1", codes.OK},
		{"bracketed IPv6", metadata.Pairs(NodeMetadataKey, "[FD00::0:1]"), "fd00::1", codes.OK},
		{"host name", metadata.Pairs(NodeMetadataKey, "CP-1.Example.com."), "cp-1.example.com", codes.OK},
		{"single nodes value", metadata.Pairs(NodesMetadataKey, "10.0.0.1"), "10.0.0.1", codes.OK},
		{"comma list", metadata.Pairs(NodeMetadataKey, "10.0.0.1,10.0.0.2"), "", codes.InvalidArgument},
		{"URL", metadata.Pairs(NodeMetadataKey, "https://10.0.0.1"), "", codes.InvalidArgument},
		{"port", metadata.Pairs(NodeMetadataKey, "[fd00::1]:50000"), "", codes.InvalidArgument},
		{"two values", metadata.Pairs(NodeMetadataKey, "a", NodeMetadataKey, "b"), "", codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := targetNode(tc.md)
			assert.Equal(t, tc.wantErr, status.Code(err), "%v", err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseRoles(t *testing.T) {
	t.Parallel()

	roles, impersonator := parseRoles([]string{" os:reader", "", "os:admin", "os:reader", "os:future", "os:impersonator"})
	assert.Equal(t, []string{role.Admin, role.Reader}, roles)
	assert.True(t, impersonator)

	roles, impersonator = parseRoles([]string{"talos", "admin"})
	assert.Empty(t, roles)
	assert.False(t, impersonator)
}

func addMember(t *testing.T, st state.State, address string) {
	t.Helper()

	m := cluster.NewMember(address)
	m.TypedSpec().Addresses = []string{address}
	m.TypedSpec().MachineType = "worker"
	require.NoError(t, st.Create(t.Context(), m))
}
