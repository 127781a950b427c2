package nodeapi_test

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	talosclient "github.com/siderolabs/talos/pkg/machinery/client"
	talosconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/pki"
)

// countingListener accepts connections and counts them, to prove an address is never dialed.
type countingListener struct {
	net.Listener

	accepted atomic.Int64
}

func listenCounting(t *testing.T, address string) *countingListener {
	t.Helper()

	lis, err := net.Listen("tcp", address)
	require.NoError(t, err)

	l := &countingListener{Listener: lis}

	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}

			l.accepted.Add(1)
			conn.Close()
		}
	}()

	t.Cleanup(func() { lis.Close() })

	return l
}

// TestEveryControlPlaneReachesTheWorker: in a cluster of three control planes, the worker gets its
// certificate from the first control plane's trustd (the endpoint host), so only that one records
// it as a member. A call addressed to the worker is still answered through every control plane,
// with nodepki's client and with talosctl's own client library; an address no control plane
// records is refused through every control plane, and never dialed.
func TestEveryControlPlaneReachesTheWorker(t *testing.T) {
	t.Parallel()

	c := startClusterOf(t, "127.0.171.2", 3, 1)
	controlPlanes := c.ControlPlanes()
	require.Len(t, controlPlanes, 3)

	worker := c.Addresses()[3]
	const unknown = "127.0.171.9"

	dialed := listenCounting(t, net.JoinHostPort(unknown, strconv.Itoa(c.APIPort)))

	cfg, err := clientconfig.Open(c.Talosconfig)
	require.NoError(t, err)

	// One client per control plane, each with that control plane as its only endpoint.
	through := map[string]*client.Client{}

	for _, cp := range controlPlanes {
		cl, err := client.New(t.Context(), client.ClientOptions{Config: cfg, Endpoints: []string{cp}})
		require.NoError(t, err)

		t.Cleanup(func() { cl.Close() })

		through[cp] = cl
	}

	// The premise: the worker is recorded by the first control plane only.
	require.EventuallyWithT(t, func(collect *assert.CollectT) {
		for i, cp := range controlPlanes {
			_, err := safe.StateGetByID[*cluster.Member](t.Context(), through[cp].COSI(), worker)
			if i == 0 {
				assert.NoError(collect, err, "%s records the worker", cp)
			} else {
				assert.True(collect, state.IsNotFoundError(err), "%s does not record the worker: %v", cp, err)
			}
		}
	}, time.Minute, 100*time.Millisecond)

	for _, cp := range controlPlanes {
		t.Run("nodepki client through "+cp, func(t *testing.T) {
			cl := through[cp]

			v, err := cl.Node().Version(cl.WithNode(t.Context(), worker), &nodeapi.VersionRequest{})
			require.NoError(t, err)
			assert.Equal(t, worker, v.GetNode())
			assert.Equal(t, "worker", v.GetMachineType())

			cs, err := safe.StateGetByID[*pki.CertificateStatus](cl.WithNode(t.Context(), worker), cl.COSI(), pki.CertAPI)
			require.NoError(t, err)
			assert.Equal(t, pki.StateValid, cs.TypedSpec().State)

			_, err = cl.Node().Version(cl.WithNode(t.Context(), unknown), &nodeapi.VersionRequest{})
			require.Error(t, err)
			assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
			// cluster create also passes the control planes' host names to --control-plane, which
			// do not resolve here: those cannot be asked, their addresses are.
			others := slices.DeleteFunc(slices.Clone(controlPlanes), func(a string) bool { return a == cp })
			assert.Contains(t, status.Convert(err).Message(),
				"node "+unknown+" is not a member of this cluster known to this node or to the control planes it asked ("+strings.Join(others, ", ")+"): not forwarded")
			assert.Contains(t, status.Convert(err).Message(), "`get members` on each")
		})
	}

	talosCfg, err := talosconfig.Open(c.Talosconfig)
	require.NoError(t, err)
	require.ElementsMatch(t, controlPlanes, talosCfg.Contexts[talosCfg.Context].Endpoints, "the talosconfig lists every control plane")

	for _, cp := range controlPlanes {
		t.Run("talos client through "+cp, func(t *testing.T) {
			cl, err := talosclient.New(t.Context(), talosclient.WithConfig(talosCfg), talosclient.WithEndpoints(cp))
			require.NoError(t, err)

			t.Cleanup(func() { cl.Close() })

			resp, err := cl.Version(talosclient.WithNode(t.Context(), worker))
			require.NoError(t, err)
			require.Len(t, resp.GetMessages(), 1)
			assert.Equal(t, worker, resp.GetMessages()[0].GetMetadata().GetHostname())

			statuses, err := safe.StateListAll[*pki.CertificateStatus](talosclient.WithNode(t.Context(), worker), cl.COSI)
			require.NoError(t, err)
			assert.Positive(t, statuses.Len())

			_, err = cl.Version(talosclient.WithNodes(t.Context(), unknown))
			require.Error(t, err)
			assert.Contains(t, err.Error(), "node "+unknown+" is not a member of this cluster", "%v", err)
		})
	}

	t.Run("talos client with every control plane as endpoint", func(t *testing.T) {
		cl, err := talosclient.New(t.Context(), talosclient.WithConfig(talosCfg))
		require.NoError(t, err)

		t.Cleanup(func() { cl.Close() })

		// talosctl spreads its calls over the endpoints: every one of them must reach the worker.
		for range 9 {
			statuses, err := safe.StateListAll[*pki.CertificateStatus](talosclient.WithNode(t.Context(), worker), cl.COSI)
			require.NoError(t, err)
			assert.Positive(t, statuses.Len())
		}
	})

	assert.Zero(t, dialed.accepted.Load(), "%s, which no control plane records, was never dialed", unknown)
}
