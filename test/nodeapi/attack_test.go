package nodeapi_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	nodeapi "github.com/nodepki/nodepki/api/node"
	clusterpkg "github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/pki"
)

// laughs is an alias-expansion bomb under key: levels of ten aliases each.
func laughs(key string, levels int) string {
	var b strings.Builder

	fmt.Fprintf(&b, "%s:\n  l0: &l0 [lol]\n", key)

	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "  l%d: &l%d [%s]\n", i, i, strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*l%d, ", i-1), 10), ", "))
	}

	return b.String()
}

// TestAttackRunningNode runs the attacks that are about a running node against real nodepkid
// processes: hostile YAML and JSON patches are refused and the daemon keeps serving, and trustd
// signs each worker its own names only.
func TestAttackRunningNode(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.91.2", 2)
	b := loadBundle(t, c)
	admin := connectWithRoles(t, c, b, "os:admin")
	cp := c.ControlPlanes()[0]

	copyBomb := []string{fmt.Sprintf(`{"op": "add", "path": "/machine/bomb", "value": {"x": %q}}`, strings.Repeat("a", 1024))}
	for i := range 30 {
		copyBomb = append(copyBomb, fmt.Sprintf(`{"op": "copy", "from": "/machine/bomb", "path": "/machine/bomb/c%d"}`, i))
	}

	current, err := admin.Node().ApplyConfiguration(admin.WithNode(t.Context(), cp), &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{[]byte("machine: {}")}, DryRun: true})
	require.NoError(t, err)
	require.False(t, current.GetChanged())

	for _, tc := range []struct {
		name string
		req  *nodeapi.ApplyConfigurationRequest
	}{
		{name: "alias cycle in a strategic merge patch", req: &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{[]byte("machine:\n  certSANs: &a [*a]\n")}}},
		{name: "alias bomb in a strategic merge patch", req: &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{[]byte(laughs("machine", 9))}}},
		{name: "alias cycle in a JSON patch", req: &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{[]byte("- op: add\n  path: /machine/bomb\n  value: &v [*v]\n")}}},
		{name: "JSON patch copy bomb", req: &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{[]byte("[" + strings.Join(copyBomb, ",") + "]")}}},
		{name: "JSON patch with too many operations", req: &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{[]byte("[" + strings.TrimSuffix(strings.Repeat(`{"op": "test", "path": "/version", "value": "v1alpha1"},`, 1001), ",") + "]")}}},
		{name: "alias bomb in an unknown field of a whole config", req: &nodeapi.ApplyConfigurationRequest{Data: []byte(string(mustMachineConfig(t, c, cp)) + laughs("unknownField", 9))}},
		{name: "alias cycle in an unknown field of a whole config", req: &nodeapi.ApplyConfigurationRequest{Data: []byte(string(mustMachineConfig(t, c, cp)) + "unknownField: &a [*a]\n")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := admin.Node().ApplyConfiguration(admin.WithNode(t.Context(), cp), tc.req)
			require.Error(t, err)
			assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)

			// The daemon keeps serving, and a later JSON patch still works.
			_, err = admin.Node().ApplyConfiguration(admin.WithNode(t.Context(), cp), &nodeapi.ApplyConfigurationRequest{
				Patches: [][]byte{[]byte(`[{"op": "test", "path": "/version", "value": "v1alpha1"}]`)}, DryRun: true,
			})
			require.NoError(t, err)
		})
	}

	t.Run("each worker holds its own names only", func(t *testing.T) {
		cpHost := c.Nodes[0].Name

		for _, n := range c.Nodes[1:] {
			statusRes, err := safe.StateGetByID[*pki.CertificateStatus](admin.WithNode(t.Context(), n.Address), admin.COSI(), pki.CertAPI)
			require.NoError(t, err)
			assert.Equal(t, pki.StateValid, statusRes.TypedSpec().State, "%s: %s", n.Name, statusRes.TypedSpec().LastError)

			crt := serverCertificate(t, n.Address, mustParse(t, b.Certs.OS.Crt))
			require.NotNil(t, crt)
			assert.Equal(t, n.Name, crt.Subject.CommonName)
			assert.Contains(t, crt.DNSNames, n.Name)
			assert.NotContains(t, crt.DNSNames, cpHost)

			for _, ip := range crt.IPAddresses {
				assert.NotEqual(t, cp, ip.String(), "%s's certificate names the control plane's address", n.Name)
			}
		}

		members, err := safe.StateListAll[*cluster.Member](admin.WithNode(t.Context(), cp), admin.COSI())
		require.NoError(t, err)

		hostnames := map[string]string{}
		for m := range members.All() {
			hostnames[m.Metadata().ID()] = m.TypedSpec().Hostname
		}

		for _, n := range c.Nodes {
			assert.Equal(t, n.Name, hostnames[n.Address], "the member of %s", n.Address)
		}
	})

	t.Run("a worker asking for the control plane's name is refused, and shows why", func(t *testing.T) {
		worker := c.Nodes[len(c.Nodes)-1]
		patch := fmt.Appendf(nil, `{"machine": {"certSANs": [%q]}}`, c.Nodes[0].Name)

		_, err := admin.Node().ApplyConfiguration(admin.WithNode(t.Context(), worker.Address), &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{patch}})
		require.NoError(t, err)

		require.EventuallyWithT(t, func(collect *assert.CollectT) {
			st, err := safe.StateGetByID[*pki.CertificateStatus](admin.WithNode(t.Context(), worker.Address), admin.COSI(), pki.CertAPI)
			if !assert.NoError(collect, err) {
				return
			}

			assert.Contains(collect, st.TypedSpec().LastError, fmt.Sprintf("DNS SAN %q is the name of this control plane", c.Nodes[0].Name))
		}, 30*time.Second, 100*time.Millisecond)

		crt := serverCertificate(t, worker.Address, mustParse(t, b.Certs.OS.Crt))
		require.NotNil(t, crt)
		assert.NotContains(t, crt.DNSNames, c.Nodes[0].Name, "the worker keeps serving with its own names")
	})

	t.Run("a flood of unauthenticated calls on one connection is cut off", func(t *testing.T) {
		node, err := c.Node(cp)
		require.NoError(t, err)

		logLines := func() int {
			data, err := os.ReadFile(node.Log)
			require.NoError(t, err)

			return strings.Count(string(data), "call refused") + strings.Count(string(data), "closing a connection")
		}

		before := logLines()
		var dialed atomic.Bool

		conn, err := grpc.NewClient(net.JoinHostPort(cp, "50000"),
			grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool(mustParse(t, b.Certs.OS.Crt))})),
			grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
				if dialed.Swap(true) {
					return nil, errors.New("one connection only")
				}

				return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			}))
		require.NoError(t, err)

		defer conn.Close()

		const calls = 10_000

		started := time.Now()
		refused := 0

		for range calls {
			if _, err := nodeapi.NewNodeServiceClient(conn).Version(t.Context(), &nodeapi.VersionRequest{}); status.Code(err) == codes.Unauthenticated {
				refused++
			}
		}

		elapsed := time.Since(started)
		lines := logLines() - before

		t.Logf("%d calls in %s: %d refused before the connection was closed, %d log lines", calls, elapsed, refused, lines)
		assert.LessOrEqual(t, refused, 10)
		assert.LessOrEqual(t, lines, 11+int(elapsed/time.Second)+1)
	})

	t.Run("no client certificate, every method", func(t *testing.T) {
		// This binary links Talos's machinery (talosctl_test.go), whose MachineService shares the
		// protobuf names of nodepki's: its methods are named here.
		methods := []string{"/machine.MachineService/Version", "/machine.MachineService/GenerateClientConfiguration", "/machine.MachineService/Kubeconfig", "/machine.MachineService/Reboot"}

		for _, desc := range []grpc.ServiceDesc{nodeapi.NodeService_ServiceDesc, v1alpha1.State_ServiceDesc} {
			for _, m := range desc.Methods {
				methods = append(methods, "/"+desc.ServiceName+"/"+m.MethodName)
			}

			for _, st := range desc.Streams {
				methods = append(methods, "/"+desc.ServiceName+"/"+st.StreamName)
			}
		}

		require.NotEmpty(t, methods)

		for _, method := range methods {
			// A connection per call: the node closes one after repeated refusals.
			conn, err := grpc.NewClient(net.JoinHostPort(cp, "50000"), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
				MinVersion: tls.VersionTLS13, RootCAs: pool(mustParse(t, b.Certs.OS.Crt)),
			})))
			require.NoError(t, err)

			stream, err := conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method)
			if err == nil {
				_ = stream.SendMsg(&emptypb.Empty{})
				_ = stream.CloseSend()
				err = stream.RecvMsg(&emptypb.Empty{})
			}

			assert.Equal(t, codes.Unauthenticated, status.Code(err), "%s: %v", method, err)
			require.NoError(t, conn.Close())
		}
	})
}

// mustMachineConfig is the config file a node of the cluster was started with.
func mustMachineConfig(t *testing.T, c *clusterpkg.Cluster, address string) []byte {
	t.Helper()

	n, err := c.Node(address)
	require.NoError(t, err)

	data, err := os.ReadFile(n.Config)
	require.NoError(t, err)

	return data
}
