package nodeapi_test

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	talosclient "github.com/siderolabs/talos/pkg/machinery/client"
	talosconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/pki"
)

// TestTalosClient drives a node with Talos's own client library and the talosconfig nodepki wrote.
func TestTalosClient(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.21.2", 1)

	cfg, err := talosconfig.Open(c.Talosconfig)
	require.NoError(t, err)

	cl, err := talosclient.New(t.Context(), talosclient.WithConfig(cfg))
	require.NoError(t, err)

	t.Cleanup(func() { cl.Close() })

	for _, node := range c.Addresses() {
		ctx := talosclient.WithNode(t.Context(), node)

		definitions, err := safe.StateListAll[*meta.ResourceDefinition](ctx, cl.COSI)
		require.NoError(t, err)

		var types []string
		for rd := range definitions.All() {
			types = append(types, rd.TypedSpec().Type)
		}

		assert.Contains(t, types, pki.CertificateStatusesType)

		ns := resource.Namespace("")
		rd, err := cl.ResolveResourceKind(ctx, &ns, "certificatestatus")
		require.NoError(t, err)

		list, err := cl.COSI.List(ctx, resource.NewMetadata(ns, rd.TypedSpec().Type, "", resource.VersionUndefined),
			state.WithListUnmarshalOptions(state.WithSkipProtobufUnmarshal()))
		require.NoError(t, err)
		require.NotEmpty(t, list.Items, node)

		found := false

		for _, item := range list.Items {
			if item.Metadata().ID() == pki.CertAPI {
				found = true
			}
		}

		assert.True(t, found, "CertificateStatuses of %s include the API certificate", node)
	}
}

// TestApplyConfiguration proves that bad configs and patches change nothing and that a good patch
// reissues the API certificate without restarting the listener.
func TestApplyConfiguration(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.22.2", 1)
	b := loadBundle(t, c)
	admin := connectWithRoles(t, c, b, "os:admin")
	worker := c.Nodes[1].Address
	ctx := admin.WithNode(t.Context(), worker)

	current := func() []byte {
		mc, err := safe.StateGetByID[*config.MachineConfig](ctx, admin.COSI(), config.ActiveID)
		require.NoError(t, err)

		return mc.TypedSpec().Raw
	}

	before := current()

	_, otherKey, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	caKeyOnWorker := []byte("machine:\n    ca:\n        key: " + b64(b.Certs.OS.Key) + "\n")
	mismatched := []byte("cluster:\n    ca:\n        crt: " + b64(b.Certs.K8s.Crt) + "\n        key: " + b64(otherKey) + "\n")

	for _, tc := range []struct {
		name    string
		request *nodeapi.ApplyConfigurationRequest
		want    string
	}{
		{"invalid YAML", &nodeapi.ApplyConfigurationRequest{Data: []byte("machine: [")}, "yaml"},
		{"worker carrying the OS CA key", &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{caKeyOnWorker}}, "machine.ca.key"},
		{"key not matching its certificate", &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{mismatched}}, "cluster.ca"},
		{"bad patch path", &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{[]byte(`[{"op":"remove","path":"/machine/nothere"}]`)}}, "/machine/nothere"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := admin.Node().ApplyConfiguration(ctx, tc.request)
			require.Error(t, err)
			assert.Equal(t, codes.InvalidArgument, status.Code(err), err.Error())
			assert.Contains(t, err.Error(), tc.want)
			assert.Equal(t, before, current(), "the refused config changed nothing")
		})
	}

	t.Run("certSANs patch reissues the API certificate on the same listener", func(t *testing.T) {
		osCA, err := certs.ParseCertificate(b.Certs.OS.Crt)
		require.NoError(t, err)

		// A connection opened before the change must survive it.
		_, err = admin.Node().Version(ctx, &nodeapi.VersionRequest{})
		require.NoError(t, err)

		pid := c.Nodes[1].PID

		_, err = admin.Node().ApplyConfiguration(ctx, &nodeapi.ApplyConfigurationRequest{
			Patches: [][]byte{[]byte("machine:\n    certSANs:\n        - worker.example.com\n")},
		})
		require.NoError(t, err)

		require.EventuallyWithT(t, func(collect *assert.CollectT) {
			if crt := serverCertificate(collect, worker, osCA); crt != nil {
				assert.Contains(collect, crt.DNSNames, "worker.example.com")
			}
		}, 10*time.Second, 50*time.Millisecond)

		_, err = admin.Node().Version(ctx, &nodeapi.VersionRequest{})
		require.NoError(t, err, "the established connection still works")
		assert.True(t, c.Nodes[1].Running())
		assert.Equal(t, pid, c.Nodes[1].PID, "the daemon was not restarted")
	})

	t.Run("kill -9 and restart keeps the applied config and serves again", func(t *testing.T) {
		applied := current()
		require.Contains(t, string(applied), "worker.example.com")

		require.NoError(t, c.Kill(worker))

		start := time.Now()

		require.NoError(t, c.Start(worker))

		osCA, err := certs.ParseCertificate(b.Certs.OS.Crt)
		require.NoError(t, err)

		require.Eventually(t, func() bool {
			conn, err := tls.Dial("tcp", net.JoinHostPort(worker, "50000"), &tls.Config{RootCAs: pool(osCA), ServerName: worker})
			if err != nil {
				return false
			}

			return conn.Close() == nil
		}, 5*time.Second, 10*time.Millisecond)

		// The time is measured by `make bench` (BenchmarkRestartToServing), not asserted here.
		t.Logf("restarted node served after %v", time.Since(start))
		assert.Equal(t, applied, current(), "the applied config survived kill -9")

		info, err := os.Stat(filepath.Join(c.Nodes[1].StateDir, "state.db"))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	})
}
