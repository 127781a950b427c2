package nodeapi_test

import (
	"context"
	stdx509 "crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/controller/generic"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/pki"
)

// connectAs opens a client through the first control plane presenting crt/key and trusting caPEM.
func connectAs(t *testing.T, c *cluster.Cluster, caPEM, crtPEM, keyPEM []byte) *client.Client {
	t.Helper()

	cfg := clientconfig.New("test", []string{c.ControlPlanes()[0]}, caPEM, crtPEM, keyPEM)

	cl, err := client.New(t.Context(), client.ClientOptions{Config: cfg})
	require.NoError(t, err)

	t.Cleanup(func() { cl.Close() })

	return cl
}

func connectWithRoles(t *testing.T, c *cluster.Cluster, b *bundle.Bundle, roles ...string) *client.Client {
	t.Helper()

	crt, key, err := b.NewClientCertificate(roles, time.Hour)
	require.NoError(t, err)

	return connectAs(t, c, b.Certs.OS.Crt, crt, key)
}

// TestCluster runs the node daemon checks that only read or touch one worker against one cluster
// of one control plane and two workers.
func TestCluster(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.20.2", 2)
	b := loadBundle(t, c)
	admin := connectWithRoles(t, c, b, "os:admin")

	osCA, err := certs.ParseCertificate(b.Certs.OS.Crt)
	require.NoError(t, err)

	roots := stdx509.NewCertPool()
	roots.AddCert(osCA)

	t.Run("workers get their API certificate from trustd", func(t *testing.T) {
		for _, worker := range c.Nodes[1:] {
			nc, err := safe.StateGetByID[*pki.NodeCertificate](admin.WithNode(t.Context(), worker.Address), admin.COSI(), pki.CertAPI)
			require.NoError(t, err, worker.Address)

			crt, err := certs.ParseCertificate([]byte(nc.TypedSpec().Certificate))
			require.NoError(t, err)

			_, err = crt.Verify(stdx509.VerifyOptions{Roots: roots, KeyUsages: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}})
			require.NoError(t, err, "the worker's API certificate chains to the OS CA")
			assert.Empty(t, crt.Subject.Organization, "trustd strips the organization")
			assert.Equal(t, []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}, crt.ExtKeyUsage)
			assert.Equal(t, worker.Address, crt.IPAddresses[0].String())
			assert.LessOrEqual(t, crt.NotAfter.Sub(crt.NotBefore), 24*time.Hour+certs.Backdate)

			// The worker holds no OS CA key: the certificate can only have come from trustd.
			root, err := safe.StateGetByID[*pki.RootSecret](admin.WithNode(t.Context(), worker.Address), admin.COSI(), pki.RootOS)
			require.NoError(t, err)
			assert.Empty(t, root.TypedSpec().IssuingKey)
		}

		log, err := os.ReadFile(c.Nodes[0].Log)
		require.NoError(t, err)
		assert.Equal(t, len(c.Nodes)-1, strings.Count(string(log), "trustd signed a certificate"))
	})

	t.Run("openssl verifies a worker's API certificate", func(t *testing.T) {
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Skip("openssl is not installed")
		}

		caFile := filepath.Join(t.TempDir(), "ca.crt")
		require.NoError(t, os.WriteFile(caFile, b.Certs.OS.Crt, 0o600))

		worker := c.Nodes[1].Address
		cmd := exec.CommandContext(t.Context(), "openssl", "s_client", "-connect", worker+":50000", "-CAfile", caFile)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, string(out))
		require.Contains(t, string(out), "Verify return code: 0 (ok)")

		x509 := exec.CommandContext(t.Context(), "openssl", "x509", "-noout", "-ext", "subjectAltName")
		x509.Stdin = strings.NewReader(string(out))
		sans, err := x509.CombinedOutput()
		require.NoError(t, err, string(sans))
		require.Contains(t, string(sans), "IP Address:"+worker)
	})

	t.Run("role matrix", func(t *testing.T) {
		types := map[string]func(ctx context.Context, st state.State) error{
			"RootSecrets":         listAndGet[*pki.RootSecret](pki.RootOS),
			"NodeCertificates":    listAndGet[*pki.NodeCertificate](pki.CertAPI),
			"MachineConfig":       listAndGet[*config.MachineConfig](config.ActiveID),
			"CertificateStatuses": listAndGet[*pki.CertificateStatus](pki.CertAPI),
			"AcceptedCAs":         listAndGet[*pki.AcceptedCA](pki.RootOS),
		}
		sensitive := map[string]bool{"RootSecrets": true, "NodeCertificates": true, "MachineConfig": true}

		for _, role := range []string{"os:reader", "os:operator", "os:admin", "os:etcd:backup"} {
			cl := connectWithRoles(t, c, b, role)

			for name, read := range types {
				allowed := role == "os:admin" || (role != "os:etcd:backup" && !sensitive[name])

				for _, node := range []string{c.Nodes[0].Address, c.Nodes[2].Address} {
					err := read(cl.WithNode(t.Context(), node), cl.COSI())
					if allowed {
						assert.NoError(t, err, "%s reading %s on %s", role, name, node)
					} else {
						assert.ErrorContains(t, err, "PermissionDenied", "%s reading %s on %s", role, name, node)
					}
				}
			}

			_, err := cl.Node().Version(cl.WithNode(t.Context(), c.Nodes[1].Address), &nodeapi.VersionRequest{})
			assert.NoError(t, err, "%s calls Version", role)
		}
	})

	t.Run("refused client certificates", func(t *testing.T) {
		ca, err := certs.LoadCA(b.Certs.OS.Crt, b.Certs.OS.Key)
		require.NoError(t, err)

		serverOnly := certs.ClientProfile([]string{"os:admin"}, time.Hour)
		serverOnly.ExtKeyUsage = []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}
		noEKUCrt, noEKUKey, err := ca.Issue(serverOnly, time.Now())
		require.NoError(t, err)

		expiredCrt, expiredKey, err := ca.Issue(certs.ClientProfile([]string{"os:admin"}, time.Second), time.Now().Add(-time.Hour))
		require.NoError(t, err)

		otherCrt, otherKey, err := certs.NewRootCA(certs.RootOS)
		require.NoError(t, err)

		otherCA, err := certs.LoadCA(otherCrt, otherKey)
		require.NoError(t, err)

		unknownCrt, unknownKey, err := otherCA.Issue(certs.ClientProfile([]string{"os:admin"}, time.Hour), time.Now())
		require.NoError(t, err)

		for _, tc := range []struct {
			name     string
			crt, key []byte
			want     string
		}{
			{"without client auth usage", noEKUCrt, noEKUKey, "missing the client auth extended key usage"},
			{"expired", expiredCrt, expiredKey, "certificate has expired or is not yet valid"},
			{"unknown CA", unknownCrt, unknownKey, "certificate signed by unknown authority"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				cl := connectAs(t, c, b.Certs.OS.Crt, tc.crt, tc.key)

				for _, node := range c.Addresses() {
					_, err := cl.Node().Version(cl.WithNode(t.Context(), node), &nodeapi.VersionRequest{})
					require.ErrorContains(t, err, tc.want, node)
				}
			})
		}
	})
}

func listAndGet[T generic.ResourceWithRD](id resource.ID) func(ctx context.Context, st state.State) error {
	return func(ctx context.Context, st state.State) error {
		if _, err := safe.StateListAll[T](ctx, st); err != nil {
			return err
		}

		_, err := safe.StateGetByID[T](ctx, st, id)

		return err
	}
}
