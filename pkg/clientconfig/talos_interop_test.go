package clientconfig

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/siderolabs/crypto/x509"
	talosclient "github.com/siderolabs/talos/pkg/machinery/client/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestTalosReadsNodepkiConfig saves a nodepki talosconfig and reads it with talosctl's own
// loader (Open and FromBytes).
func TestTalosReadsNodepkiConfig(t *testing.T) {
	t.Parallel()

	creds := newCredentials(t, []string{"os:admin"}, time.Hour)
	cfg := New("admin@demo", []string{"127.0.0.1", "127.0.0.2:50000"}, creds.ca, creds.crt, creds.key)
	cfg.Contexts["admin@demo"].Nodes = []string{"127.0.0.3"}
	cfg.Merge(New("other", []string{"127.0.0.9"}, creds.ca, creds.crt, creds.key))
	cfg.Context = "admin@demo"

	path := filepath.Join(t.TempDir(), "talosconfig")
	require.NoError(t, cfg.Save(path))

	opened, err := talosclient.Open(path)
	require.NoError(t, err)

	data, err := cfg.Bytes()
	require.NoError(t, err)

	fromBytes, err := talosclient.FromBytes(data)
	require.NoError(t, err)

	for name, talos := range map[string]*talosclient.Config{"Open": opened, "FromBytes": fromBytes} {
		assert.Equal(t, "admin@demo", talos.Context, name)
		require.Len(t, talos.Contexts, 2, name)

		ctx := talos.Contexts["admin@demo"]
		require.NotNil(t, ctx, name)

		ours := cfg.Contexts["admin@demo"]
		assert.Equal(t, ours.Endpoints, ctx.Endpoints, name)
		assert.Equal(t, ours.Nodes, ctx.Nodes, name)
		assert.Equal(t, ours.CA, ctx.CA, name)
		assert.Equal(t, ours.Crt, ctx.Crt, name)
		assert.Equal(t, ours.Key, ctx.Key, name)
		assert.Equal(t, []string{"127.0.0.9"}, talos.Contexts["other"].Endpoints, name)
	}
}

// TestNodepkiReadsTalosConfig reads a talosconfig written by talosctl's code, including fields
// nodepki does not use, and checks a rewrite by nodepki keeps them for talosctl.
func TestNodepkiReadsTalosConfig(t *testing.T) {
	t.Parallel()

	creds := newCredentials(t, []string{"os:operator"}, time.Hour)

	talos := talosclient.NewConfig("ops", []string{"127.0.0.1"}, creds.ca, &x509.PEMEncodedCertificateAndKey{Crt: creds.crt, Key: creds.key})
	talos.Contexts["omni"] = &talosclient.Context{
		Endpoints: []string{"https://omni.example"},
		Auth:      talosclient.Auth{SideroV1: &talosclient.SideroV1{Identity: "someone@example.com"}},
		Cluster:   "prod",
	}

	path := filepath.Join(t.TempDir(), "talosconfig")
	require.NoError(t, talos.Save(path))

	cfg, err := Open(path)
	require.NoError(t, err)

	info, err := cfg.Info()
	require.NoError(t, err)
	assert.Equal(t, "ops", info.Context)
	assert.Equal(t, []string{"127.0.0.1"}, info.Endpoints)
	assert.Equal(t, []string{"os:operator"}, info.Roles)

	ctx, err := cfg.Current()
	require.NoError(t, err)

	key, err := ctx.KeyPEM()
	require.NoError(t, err)
	assert.Equal(t, creds.key, key)

	ctx.Nodes = []string{"127.0.0.5"}
	require.NoError(t, cfg.Save(path))

	again, err := talosclient.Open(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.5"}, again.Contexts["ops"].Nodes)
	assert.Equal(t, talos.Contexts["omni"], again.Contexts["omni"], "Omni auth and cluster survive a nodepki rewrite")
}
