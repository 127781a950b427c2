package api

import (
	"context"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/nodepki/nodepki/api/common"
	"github.com/nodepki/nodepki/api/machine"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
	"github.com/nodepki/nodepki/pkg/role"
)

// listenSamePort opens a listener on each address with one port for all, as nodes of a cluster
// have: forwarding dials the target on the forwarding node's API port.
func listenSamePort(t *testing.T, addrs ...string) []net.Listener {
	t.Helper()

	for range 20 {
		first, err := net.Listen("tcp", net.JoinHostPort(addrs[0], "0"))
		require.NoError(t, err)

		_, port, err := net.SplitHostPort(first.Addr().String())
		require.NoError(t, err)

		listeners := []net.Listener{first}

		for _, addr := range addrs[1:] {
			lis, err := net.Listen("tcp", net.JoinHostPort(addr, port))
			if err != nil {
				break
			}

			listeners = append(listeners, lis)
		}

		if len(listeners) == len(addrs) {
			return listeners
		}

		for _, lis := range listeners {
			lis.Close()
		}
	}

	t.Fatalf("no port free on all of %v", addrs)

	return nil
}

// versionsByNode indexes the replies of a Version call to several nodes by their node label.
func versionsByNode(resp *machine.VersionResponse) map[string]*machine.Version {
	byNode := map[string]*machine.Version{}
	for _, msg := range resp.GetMessages() {
		byNode[msg.GetMetadata().GetHostname()] = msg
	}

	return byNode
}

func toNodes(ctx context.Context, nodes ...string) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	md.Set(NodesMetadataKey, nodes...)

	return metadata.NewOutgoingContext(ctx, md)
}

func machineClient(conn *grpc.ClientConn) machine.MachineServiceClient {
	return machine.NewMachineServiceClient(conn)
}

// TestMachineService runs talosctl's calls against a control plane (127.0.80.2) and two workers.
func TestMachineService(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	lis := listenSamePort(t, "127.0.80.2", "127.0.80.3", "127.0.80.4")
	cp := startNode(t, p, nodeSpec{addr: "127.0.80.2", controlPlane: true, lis: lis[0]})
	w1 := startNode(t, p, nodeSpec{addr: "127.0.80.3", lis: lis[1]})
	startNode(t, p, nodeSpec{addr: "127.0.80.4", lis: lis[2]})

	// The control plane forwards to the members it records only (127.0.80.9 does not answer).
	for _, member := range []string{"127.0.80.3", "127.0.80.4", "127.0.80.9"} {
		addMember(t, cp.st, member)
	}

	admin := machineClient(cp.dialAs(t, p, role.Admin))
	reader := machineClient(cp.dialAs(t, p, role.Reader))

	t.Run("version of each node, labelled with it", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			ctx  context.Context
			want []string
		}{
			{"no metadata", callCtx(t), []string{"127.0.80.2"}},
			{"node: a worker through the control plane", toNode(callCtx(t), "127.0.80.3"), []string{"127.0.80.3"}},
			{"nodes: one", toNodes(callCtx(t), "127.0.80.4"), []string{"127.0.80.4"}},
			{"nodes: two workers", toNodes(callCtx(t), "127.0.80.3", "127.0.80.4"), []string{"127.0.80.3", "127.0.80.4"}},
			{"nodes: all three", toNodes(callCtx(t), "127.0.80.2", "127.0.80.3", "127.0.80.4"), []string{"127.0.80.2", "127.0.80.3", "127.0.80.4"}},
			{"nodes: as the caller names them", toNodes(callCtx(t), extraAddress(cp.addr)), []string{extraAddress(cp.addr)}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp, err := reader.Version(tc.ctx, &emptypb.Empty{})
				require.NoError(t, err)

				var got []string

				for _, msg := range resp.GetMessages() {
					assert.Empty(t, msg.GetMetadata().GetError())
					assert.NotEmpty(t, msg.GetVersion().GetTag())
					assert.NotEmpty(t, msg.GetVersion().GetGoVersion())
					assert.Equal(t, platformName, msg.GetPlatform().GetName())
					assert.True(t, msg.GetFeatures().GetRbac())

					got = append(got, msg.GetMetadata().GetHostname())
				}

				assert.ElementsMatch(t, tc.want, got)
			})
		}
	})

	t.Run("a node that fails is a labelled error, the others still answer", func(t *testing.T) {
		resp, err := reader.Version(toNodes(callCtx(t), "127.0.80.3", "127.0.80.9"), &emptypb.Empty{})
		require.NoError(t, err)
		require.Len(t, resp.GetMessages(), 2)

		byNode := versionsByNode(resp)

		assert.Empty(t, byNode["127.0.80.3"].GetMetadata().GetError())
		assert.NotEmpty(t, byNode["127.0.80.3"].GetVersion().GetTag())

		failed := byNode["127.0.80.9"]
		require.NotNil(t, failed)
		assert.Nil(t, failed.GetVersion())
		assert.NotEmpty(t, failed.GetMetadata().GetError())
		assert.Equal(t, int32(codes.Unavailable), failed.GetMetadata().GetStatus().GetCode())
	})

	t.Run("a worker does not forward: the other node's reply says so", func(t *testing.T) {
		viaWorker := machineClient(w1.dialAs(t, p, role.Admin))

		resp, err := viaWorker.Version(toNodes(callCtx(t), "127.0.80.3", "127.0.80.2"), &emptypb.Empty{})
		require.NoError(t, err)
		require.Len(t, resp.GetMessages(), 2)

		for _, msg := range resp.GetMessages() {
			switch msg.GetMetadata().GetHostname() {
			case "127.0.80.3":
				assert.Empty(t, msg.GetMetadata().GetError())
			case "127.0.80.2":
				assert.Equal(t, int32(codes.PermissionDenied), msg.GetMetadata().GetStatus().GetCode())
				assert.Contains(t, msg.GetMetadata().GetError(), "no request forwarding")
			default:
				t.Errorf("unexpected node %q", msg.GetMetadata().GetHostname())
			}
		}
	})

	t.Run("client configuration with the requested roles and lifetime", func(t *testing.T) {
		for _, ctx := range []context.Context{callCtx(t), toNode(callCtx(t), "127.0.80.2"), toNodes(callCtx(t), "127.0.80.2")} {
			resp, err := admin.GenerateClientConfiguration(ctx, &machine.GenerateClientConfigurationRequest{
				Roles:  []string{role.Reader, role.Operator},
				CrtTtl: durationpb.New(36 * time.Hour),
			})
			require.NoError(t, err)
			require.Len(t, resp.GetMessages(), 1)

			msg := resp.GetMessages()[0]
			assert.Equal(t, "127.0.80.2", msg.GetMetadata().GetHostname())
			assert.Equal(t, p.osCA.CrtPEM, msg.GetCa())

			crt := parseCertificate(t, msg.GetCrt())
			assert.ElementsMatch(t, []string{role.Operator, role.Reader}, crt.Subject.Organization)
			assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, crt.ExtKeyUsage)
			assert.InDelta(t, (36 * time.Hour).Seconds(), crt.NotAfter.Sub(crt.NotBefore).Seconds(), certs.Backdate.Seconds()+60)

			cfg, err := clientconfig.Parse(msg.GetTalosconfig())
			require.NoError(t, err)

			cc, err := cfg.Current()
			require.NoError(t, err)

			crtPEM, err := cc.CrtPEM()
			require.NoError(t, err)

			keyPEM, err := cc.KeyPEM()
			require.NoError(t, err)

			pair := mustKeyPair(t, crtPEM, keyPEM)
			conn := dial(t, cp.endpoint, pair, p.osCA)

			for _, node := range []string{"127.0.80.2", "127.0.80.3", "127.0.80.4"} {
				_, err = machineClient(conn).Version(toNode(callCtx(t), node), &emptypb.Empty{})
				require.NoError(t, err, "the new credential works against %s", node)
			}
		}
	})

	t.Run("bad lifetimes are refused", func(t *testing.T) {
		for _, tc := range []struct {
			ttl  *durationpb.Duration
			want string
		}{
			{durationpb.New(-time.Hour), "is negative"},
			{durationpb.New(time.Millisecond), "shorter than one second"},
			{durationpb.New(maxClientTTL + time.Hour), "longer than the CA lifetime"},
			{&durationpb.Duration{Seconds: 1, Nanos: -1}, "crt_ttl"},
		} {
			_, err := admin.GenerateClientConfiguration(callCtx(t), &machine.GenerateClientConfigurationRequest{Roles: []string{role.Reader}, CrtTtl: tc.ttl})
			require.Error(t, err)
			assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			assert.Contains(t, err.Error(), tc.want)
		}

		_, err := admin.GenerateClientConfiguration(callCtx(t), &machine.GenerateClientConfigurationRequest{Roles: []string{"os:root"}})
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	})

	t.Run("os:reader is refused client configurations and kubeconfigs", func(t *testing.T) {
		for _, ctx := range []context.Context{callCtx(t), toNode(callCtx(t), "127.0.80.3")} {
			_, err := reader.GenerateClientConfiguration(ctx, &machine.GenerateClientConfigurationRequest{Roles: []string{role.Reader}})
			assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

			_, err = readKubeconfig(ctx, reader)
			assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
		}

		resp, err := reader.GenerateClientConfiguration(toNodes(callCtx(t), "127.0.80.2"), &machine.GenerateClientConfigurationRequest{Roles: []string{role.Reader}})
		require.NoError(t, err)
		require.Len(t, resp.GetMessages(), 1)
		assert.Equal(t, int32(codes.PermissionDenied), resp.GetMessages()[0].GetMetadata().GetStatus().GetCode())
		assert.Empty(t, resp.GetMessages()[0].GetCrt())
	})

	t.Run("a worker refuses both, naming the control plane", func(t *testing.T) {
		_, err := admin.GenerateClientConfiguration(toNode(callCtx(t), "127.0.80.3"), &machine.GenerateClientConfigurationRequest{Roles: []string{role.Reader}})
		require.Error(t, err)
		assert.Equal(t, codes.FailedPrecondition, status.Code(err))
		assert.Contains(t, err.Error(), "-n 127.0.0.2 (the host of cluster.controlPlane.endpoint https://127.0.0.2:6443)")

		_, err = readKubeconfig(toNode(callCtx(t), "127.0.80.3"), admin)
		assert.Equal(t, codes.FailedPrecondition, status.Code(err))
		assert.Contains(t, err.Error(), "kubeconfigs are issued by control-plane nodes only")
		assert.Contains(t, err.Error(), "-n 127.0.0.2")
	})

	t.Run("kubeconfig is a tar.gz of one kubeconfig file, also through nodes", func(t *testing.T) {
		for _, ctx := range []context.Context{callCtx(t), toNodes(callCtx(t), "127.0.80.2"), toNode(callCtx(t), "127.0.80.2")} {
			archive, err := readKubeconfig(ctx, admin)
			require.NoError(t, err)

			data := untarKubeconfig(t, archive)
			checkAdminKubeconfig(t, p, data, kubeconfig.AdminLifetime)
		}

		// Through `nodes`, a worker's refusal is the labelled content of the stream.
		_, err := readKubeconfig(toNodes(callCtx(t), "127.0.80.3"), admin)
		assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
	})

	t.Run("other methods are unimplemented, naming the nodepki command", func(t *testing.T) {
		conn := cp.dialAs(t, p, role.Reader)

		for _, tc := range []struct {
			method string
			want   string
		}{
			{"ApplyConfiguration", "use `nodepkictl apply-config`"},
			{"EtcdSnapshot", "use `nodepkictl etcd snapshot`"},
			{"GenerateConfiguration", "use `nodepkictl gen config`"},
			{"Reboot", "not the OS"},
			{"NoSuchMethod", "not the OS"},
		} {
			err := conn.Invoke(toNode(callCtx(t), "127.0.80.3"), "/machine.MachineService/"+tc.method, &emptypb.Empty{}, &emptypb.Empty{})
			require.Error(t, err)
			assert.Equal(t, codes.Unimplemented, status.Code(err), "%v", err)
			assert.Contains(t, err.Error(), "machine.MachineService/"+tc.method+" is not served by nodepki")
			assert.Contains(t, err.Error(), tc.want)
		}
	})

	t.Run("bad nodes metadata", func(t *testing.T) {
		_, err := reader.Version(toNodes(callCtx(t), "127.0.80.3", "127.0.80.3:50000"), &emptypb.Empty{})
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)

		many := make([]string, maxFanOut+1)
		for i := range many {
			many[i] = "127.0.80.3"
		}

		_, err = reader.Version(toNodes(callCtx(t), many...), &emptypb.Empty{})
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)

		_, err = reader.Version(metadata.AppendToOutgoingContext(toNodes(callCtx(t), "127.0.80.3"), NodeMetadataKey, "127.0.80.3"), &emptypb.Empty{})
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	})
}

// readKubeconfig reads a Kubeconfig stream to its end and returns the bytes it carried.
func readKubeconfig(ctx context.Context, cl machine.MachineServiceClient) ([]byte, error) {
	stream, err := cl.Kubeconfig(ctx, &emptypb.Empty{})
	if err != nil {
		return nil, err
	}

	var data []byte

	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return data, nil
		}

		if err != nil {
			return nil, err
		}

		// A node's failure in a call to several nodes arrives as a labelled message.
		if md := msg.GetMetadata(); md.GetError() != "" {
			return nil, status.ErrorProto(md.GetStatus())
		}

		data = append(data, msg.GetBytes()...)
	}
}

func parseCertificate(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()

	parsed, err := certs.ParseCertificates(pemData)
	require.NoError(t, err)
	require.Len(t, parsed, 1)

	return parsed[0]
}

func TestLabelledBackend(t *testing.T) {
	t.Parallel()

	b := &labelledBackend{node: "node-a"}

	t.Run("unary: every reply gets the hostname, other metadata stays", func(t *testing.T) {
		resp := &machine.VersionResponse{Messages: []*machine.Version{
			{Metadata: &common.Metadata{Hostname: "self", Error: "kept"}, Version: &machine.VersionInfo{Tag: "v1"}},
			{Version: &machine.VersionInfo{Tag: "v2"}},
		}}

		raw, err := proto.Marshal(resp)
		require.NoError(t, err)

		labelled, err := b.AppendInfo(false, raw)
		require.NoError(t, err)

		var got machine.VersionResponse
		require.NoError(t, proto.Unmarshal(labelled, &got))
		require.Len(t, got.GetMessages(), 2)
		assert.Equal(t, "node-a", got.GetMessages()[0].GetMetadata().GetHostname())
		assert.Equal(t, "kept", got.GetMessages()[0].GetMetadata().GetError())
		assert.Equal(t, "v1", got.GetMessages()[0].GetVersion().GetTag())
		assert.Equal(t, "node-a", got.GetMessages()[1].GetMetadata().GetHostname())
		assert.Equal(t, "v2", got.GetMessages()[1].GetVersion().GetTag())
	})

	t.Run("unary: an empty response stays empty", func(t *testing.T) {
		labelled, err := b.AppendInfo(false, nil)
		require.NoError(t, err)
		assert.Empty(t, labelled)
	})

	t.Run("unary: a malformed response is an error", func(t *testing.T) {
		_, err := b.AppendInfo(false, []byte{0x0a, 0x05, 0x01})
		assert.Error(t, err)
	})

	t.Run("streaming: the message gets the hostname", func(t *testing.T) {
		raw, err := proto.Marshal(&common.Data{Bytes: []byte("chunk")})
		require.NoError(t, err)

		labelled, err := b.AppendInfo(true, raw)
		require.NoError(t, err)

		var got common.Data
		require.NoError(t, proto.Unmarshal(labelled, &got))
		assert.Equal(t, "node-a", got.GetMetadata().GetHostname())
		assert.Equal(t, []byte("chunk"), got.GetBytes())
	})

	t.Run("errors become labelled replies with their status", func(t *testing.T) {
		callErr := status.Error(codes.PermissionDenied, "not authorized")

		raw, err := b.BuildError(false, callErr)
		require.NoError(t, err)

		var unary machine.GenerateClientConfigurationResponse
		require.NoError(t, proto.Unmarshal(raw, &unary))
		require.Len(t, unary.GetMessages(), 1)
		md := unary.GetMessages()[0].GetMetadata()
		assert.Equal(t, "node-a", md.GetHostname())
		assert.Contains(t, md.GetError(), "not authorized")
		assert.Equal(t, int32(codes.PermissionDenied), md.GetStatus().GetCode())

		raw, err = b.BuildError(true, errors.New("plain"))
		require.NoError(t, err)

		var streamed common.Data
		require.NoError(t, proto.Unmarshal(raw, &streamed))
		assert.Equal(t, "plain", streamed.GetMetadata().GetError())
		assert.Equal(t, int32(codes.Unknown), streamed.GetMetadata().GetStatus().GetCode())
	})
}

// FuzzLabelledBackendAppendInfo feeds arbitrary backend replies to the labelling: it never panics,
// and a reply that is a valid response stays valid with every message labelled.
func FuzzLabelledBackendAppendInfo(f *testing.F) {
	for _, resp := range []proto.Message{
		&machine.VersionResponse{Messages: []*machine.Version{{Version: &machine.VersionInfo{Tag: "v1"}}}},
		&machine.GenerateClientConfigurationResponse{Messages: []*machine.GenerateClientConfiguration{{Crt: []byte("crt")}, {}}},
		&common.EmptyResponse{},
	} {
		raw, err := proto.Marshal(resp)
		require.NoError(f, err)
		f.Add(raw)
	}

	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})

	b := &labelledBackend{node: "node-a"}

	f.Fuzz(func(t *testing.T, raw []byte) {
		labelled, err := b.AppendInfo(false, raw)

		var before machine.VersionResponse
		if proto.Unmarshal(raw, &before) != nil {
			return
		}

		require.NoError(t, err, "a valid response is labelled")

		var after machine.VersionResponse
		require.NoError(t, proto.Unmarshal(labelled, &after))
		require.Len(t, after.GetMessages(), len(before.GetMessages()))

		for _, msg := range after.GetMessages() {
			assert.Equal(t, "node-a", msg.GetMetadata().GetHostname())
		}
	})
}
