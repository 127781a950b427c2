package nodeapi_test

import (
	stdx509 "crypto/x509"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	talosclient "github.com/siderolabs/talos/pkg/machinery/client"
	talosconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// shortLifetime is the shortest machine.certificateLifetimes value a config may set.
const shortLifetime = 10 * time.Second

// TestSelfHealAfterExpiry powers nodes off until every certificate they held has expired and
// starts them again: they serve with fresh certificates, trusted and unexpired, with no manual
// step. First the whole cluster (control plane and worker), then a worker alone while its control
// plane runs on, so that its expired node API certificate is replaced through trustd.
func TestSelfHealAfterExpiry(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.131.2", 1)
	b := loadBundle(t, c)
	ca := mustParse(t, b.Certs.OS.Crt)
	controlPlane, worker := c.Nodes[0].Address, c.Nodes[1].Address

	cfg, err := talosconfig.Open(c.Talosconfig)
	require.NoError(t, err)

	cl := talosClient(t, cfg)

	// Control planes first: trustd signs workers' node API certificates with its own api lifetime.
	for _, node := range []string{controlPlane, worker} {
		out, err := ctl(t, t.Context(), "--talosconfig", c.Talosconfig, "-n", node, "patch", "machineconfig",
			"--patch", `{"machine": {"certificateLifetimes": {"api": "10s", "etcd": "10s", "kubernetes": "10s"}}}`)
		require.NoError(t, err, out)
	}

	// leaves reads every leaf certificate of a node (an admin reads NodeCertificates).
	leaves := func(collect assert.TestingT, node string) []*stdx509.Certificate {
		list, err := safe.StateListAll[*pki.NodeCertificate](talosclient.WithNode(t.Context(), node), cl.COSI)
		if !assert.NoError(collect, err) {
			return nil
		}

		var out []*stdx509.Certificate

		for res := range list.All() {
			crt, err := certs.ParseCertificate([]byte(res.TypedSpec().Certificate))
			if assert.NoError(collect, err, "%s %s", node, res.Metadata().ID()) {
				out = append(out, crt)
			}
		}

		return out
	}

	// healthy: the node serves a certificate of the OS CA and every leaf it holds has the short
	// lifetime, was issued after since, is trusted and unexpired.
	healthy := func(t *testing.T, node string, since time.Time) {
		t.Helper()

		require.EventuallyWithT(t, func(collect *assert.CollectT) {
			served := serverCertificate(collect, node, ca)
			if served == nil {
				return
			}

			assert.True(collect, served.NotBefore.Add(certs.Backdate).After(since.Add(-time.Second)), "%s serves a certificate issued before it started", node)

			held := leaves(collect, node)
			assert.NotEmpty(collect, held, node)

			for _, crt := range held {
				assert.Equal(collect, shortLifetime, crt.NotAfter.Sub(crt.NotBefore.Add(certs.Backdate)).Round(time.Second), "%s %s", node, crt.Subject)
				assert.True(collect, crt.NotBefore.Add(certs.Backdate).After(since.Add(-time.Second)), "%s %s is fresh", node, crt.Subject)
			}

			statuses, err := safe.StateListAll[*pki.CertificateStatus](talosclient.WithNode(t.Context(), node), cl.COSI)
			if !assert.NoError(collect, err) {
				return
			}

			for status := range statuses.All() {
				// A 10 s certificate is renewed from 6.7 s on: renewing is healthy.
				assert.Contains(collect, []string{pki.StateValid, pki.StateRenewing}, status.TypedSpec().State, "%s %s: %s", node, status.Metadata().ID(), status.TypedSpec().LastError)
				assert.True(collect, status.TypedSpec().Trusted, "%s %s", node, status.Metadata().ID())
			}
		}, 60*time.Second, 100*time.Millisecond)
	}

	healed := func(t *testing.T, nodes ...string) {
		t.Helper()

		// The certificates each node holds when it stops; renewals that land between this read and
		// the stop are covered by waiting a full lifetime after the stop.
		held := map[string][]*stdx509.Certificate{}

		require.EventuallyWithT(t, func(collect *assert.CollectT) {
			for _, node := range nodes {
				held[node] = leaves(collect, node)
			}
		}, 10*time.Second, 100*time.Millisecond)

		for i := len(nodes) - 1; i >= 0; i-- {
			require.NoError(t, c.Stop(nodes[i]))
		}

		stopped := time.Now()

		// Powered off past the expiry of every leaf: poll until each certificate read above has
		// expired and a whole lifetime has passed since the stop.
		require.Eventually(t, func() bool {
			now := time.Now()
			if now.Before(stopped.Add(shortLifetime + time.Second)) {
				return false
			}

			for _, crts := range held {
				for _, crt := range crts {
					if !now.After(crt.NotAfter) {
						return false
					}
				}
			}

			return true
		}, 3*shortLifetime, 100*time.Millisecond)

		started := time.Now()

		for _, node := range nodes {
			require.NoError(t, c.Start(node))
		}

		for _, node := range nodes {
			healthy(t, node, started)
		}
	}

	healthy(t, controlPlane, time.Time{})
	healthy(t, worker, time.Time{})

	t.Run("whole cluster powered off", func(t *testing.T) { healed(t, controlPlane, worker) })
	t.Run("worker powered off", func(t *testing.T) { healed(t, worker) })
}
