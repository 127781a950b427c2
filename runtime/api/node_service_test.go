package api

import (
	"crypto/x509"
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/pkg/version"
)

func TestVersionForEveryRole(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	n := startNode(t, p, nodeSpec{addr: "127.0.0.2", controlPlane: true})

	for _, r := range role.All {
		t.Run(r, func(t *testing.T) {
			resp, err := nodeClient(n.dialAs(t, p, r)).Version(callCtx(t), &node.VersionRequest{})
			require.NoError(t, err)
			assert.Equal(t, version.Version, resp.GetVersion())
			assert.Equal(t, "127.0.0.2", resp.GetNode())
			assert.Equal(t, machineconfig.TypeControlPlane, resp.GetMachineType())
		})
	}
}

// patchedConfig applies a patch to cfg with machineconfig, for building whole documents.
func patchedConfig(t *testing.T, cfg []byte, patch string) []byte {
	t.Helper()

	parsed, err := machineconfig.Parse(cfg)
	require.NoError(t, err)

	pt, err := machineconfig.LoadPatch([]byte(patch))
	require.NoError(t, err)

	next, err := machineconfig.Apply(parsed, pt)
	require.NoError(t, err)

	out, err := next.Bytes()
	require.NoError(t, err)

	return out
}

func TestApplyConfiguration(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	n := startNode(t, p, nodeSpec{addr: "127.0.0.2"})
	admin := nodeClient(n.dialAs(t, p, role.Admin))

	notACert := base64.StdEncoding.EncodeToString([]byte("not a certificate"))

	refused := []struct {
		name string
		req  *node.ApplyConfigurationRequest
		want string
	}{
		{
			"document without token", &node.ApplyConfigurationRequest{Data: patchedConfig(t, p.worker, `[{"op": "remove", "path": "/machine/token"}]`)},
			"machine.token",
		},
		{"document that is not YAML", &node.ApplyConfigurationRequest{Data: []byte("machine: [")}, "cannot be parsed"},
		{
			"patch breaking a CA", &node.ApplyConfigurationRequest{Patches: [][]byte{[]byte("machine:\n  ca:\n    crt: " + notACert + "\n")}},
			"machine.ca.crt",
		},
		{"patch adding a CA key on a worker", &node.ApplyConfigurationRequest{Patches: [][]byte{
			[]byte("machine:\n  ca:\n    key: " + base64.StdEncoding.EncodeToString(p.osCA.KeyPEM) + "\n"),
		}}, "machine.ca.key"},
		{
			"JSON patch on a missing path", &node.ApplyConfigurationRequest{Patches: [][]byte{[]byte(`[{"op": "replace", "path": "/machine/nope/x", "value": 1}]`)}},
			"patches cannot be applied",
		},
		{"machine type change", &node.ApplyConfigurationRequest{Data: p.controlPlane}, "machine.type cannot change on a running node"},
		{
			"machine type change that breaks validation too", &node.ApplyConfigurationRequest{Patches: [][]byte{[]byte("machine:\n  type: controlplane\n")}},
			"machine.type cannot change on a running node (\"worker\" -> \"controlplane\")",
		},
		{"both data and patches", &node.ApplyConfigurationRequest{Data: p.worker, Patches: [][]byte{[]byte("machine: {}")}}, "not both"},
		{"nothing", &node.ApplyConfigurationRequest{}, "nothing to apply"},
	}

	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			for _, dryRun := range []bool{false, true} {
				tc.req.DryRun = dryRun

				_, err := admin.ApplyConfiguration(callCtx(t), tc.req)
				require.Error(t, err)
				assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
				assert.Contains(t, status.Convert(err).Message(), tc.want)
			}

			raw, writes := n.store.snapshot()
			assert.Equal(t, p.worker, raw)
			assert.Zero(t, writes)
		})
	}

	// Idempotent (a strategic merge would append to the list again).
	sanPatch := []byte(`[{"op": "add", "path": "/machine/certSANs", "value": ["api.apitest.example.com"]}]`)

	t.Run("dry run", func(t *testing.T) {
		resp, err := admin.ApplyConfiguration(callCtx(t), &node.ApplyConfigurationRequest{Patches: [][]byte{sanPatch}, DryRun: true})
		require.NoError(t, err)
		assert.True(t, resp.GetChanged())
		assert.Contains(t, resp.GetDiff(), "+        - api.apitest.example.com")
		assert.NotContains(t, resp.GetDiff(), string(p.osCA.CrtPEM[:40]), "the diff is not redacted")
		assert.Equal(t, "127.0.0.2", resp.GetNode())

		raw, writes := n.store.snapshot()
		assert.Equal(t, p.worker, raw)
		assert.Zero(t, writes)
	})

	t.Run("non-admin", func(t *testing.T) {
		for _, role := range []string{role.Reader, role.Operator, role.EtcdBackup} {
			_, err := nodeClient(n.dialAs(t, p, role)).ApplyConfiguration(callCtx(t), &node.ApplyConfigurationRequest{Patches: [][]byte{sanPatch}})
			assert.Equal(t, codes.PermissionDenied, status.Code(err), "%s: %v", role, err)
		}

		_, writes := n.store.snapshot()
		assert.Zero(t, writes)
	})

	t.Run("apply patch, then the same again", func(t *testing.T) {
		resp, err := admin.ApplyConfiguration(callCtx(t), &node.ApplyConfigurationRequest{Patches: [][]byte{sanPatch}})
		require.NoError(t, err)
		assert.True(t, resp.GetChanged())

		raw, writes := n.store.snapshot()
		assert.Equal(t, 1, writes)

		applied, err := machineconfig.Parse(raw)
		require.NoError(t, err)
		assert.Equal(t, []string{"api.apitest.example.com"}, applied.Document().Machine.CertSANs)

		resp, err = admin.ApplyConfiguration(callCtx(t), &node.ApplyConfigurationRequest{Patches: [][]byte{sanPatch}})
		require.NoError(t, err)
		assert.False(t, resp.GetChanged())
		assert.Empty(t, resp.GetDiff())

		_, writes = n.store.snapshot()
		assert.Equal(t, 1, writes, "an apply that changes nothing writes nothing")
	})

	t.Run("apply whole document", func(t *testing.T) {
		_, err := admin.ApplyConfiguration(callCtx(t), &node.ApplyConfigurationRequest{Data: p.worker})
		require.NoError(t, err)

		raw, _ := n.store.snapshot()
		assert.Equal(t, p.worker, raw)
	})
}

func TestGenerateClientConfiguration(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	cp := startNode(t, p, nodeSpec{addr: "127.0.0.2", controlPlane: true})
	admin := nodeClient(cp.dialAs(t, p, role.Admin))

	resp, err := admin.GenerateClientConfiguration(callCtx(t), &node.GenerateClientConfigurationRequest{
		Roles: []string{role.Reader}, CrtTtlSeconds: 3600,
	})
	require.NoError(t, err)

	assert.Equal(t, p.osCA.CrtPEM, resp.GetCa())

	crt, err := certs.ParseCertificate(resp.GetCrt())
	require.NoError(t, err)
	assert.Equal(t, []string{role.Reader}, crt.Subject.Organization)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, crt.ExtKeyUsage)
	assert.WithinDuration(t, time.Now().Add(time.Hour), crt.NotAfter, time.Minute)

	cfg, err := clientconfig.Parse(resp.GetTalosconfig())
	require.NoError(t, err)
	assert.Equal(t, "reader@"+testClusterName, cfg.Context)

	// The generated credentials work, with the role they carry.
	ctx, err := cfg.Current()
	require.NoError(t, err)

	keyPEM, err := ctx.KeyPEM()
	require.NoError(t, err)

	generated := dial(t, cp.endpoint, mustKeyPair(t, resp.GetCrt(), keyPEM), p.osCA)
	_, err = nodeClient(generated).Version(callCtx(t), &node.VersionRequest{})
	require.NoError(t, err)

	_, err = nodeClient(generated).GenerateClientConfiguration(callCtx(t), &node.GenerateClientConfigurationRequest{Roles: []string{role.Admin}})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	t.Run("defaults and several roles", func(t *testing.T) {
		resp, err := admin.GenerateClientConfiguration(callCtx(t), &node.GenerateClientConfigurationRequest{Roles: []string{role.Reader, role.Operator}})
		require.NoError(t, err)

		crt, err := certs.ParseCertificate(resp.GetCrt())
		require.NoError(t, err)
		assert.ElementsMatch(t, []string{role.Operator, role.Reader}, crt.Subject.Organization)
		assert.WithinDuration(t, time.Now().Add(certs.ClientLifetime), crt.NotAfter, time.Minute)

		cfg, err := clientconfig.Parse(resp.GetTalosconfig())
		require.NoError(t, err)
		assert.Equal(t, testClusterName, cfg.Context)
	})

	for _, tc := range []struct {
		name string
		req  *node.GenerateClientConfigurationRequest
		want string
	}{
		{"unknown role", &node.GenerateClientConfigurationRequest{Roles: []string{"os:root"}}, `unknown role "os:root"`},
		{"impersonator", &node.GenerateClientConfigurationRequest{Roles: []string{role.Impersonator}}, "unknown role"},
		{"no role", &node.GenerateClientConfigurationRequest{}, "no roles given"},
		{"negative ttl", &node.GenerateClientConfigurationRequest{Roles: []string{role.Admin}, CrtTtlSeconds: -1}, "negative"},
		{"huge ttl", &node.GenerateClientConfigurationRequest{Roles: []string{role.Admin}, CrtTtlSeconds: 1 << 62}, "longer than the CA lifetime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := admin.GenerateClientConfiguration(callCtx(t), tc.req)
			require.Error(t, err)
			assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	t.Run("worker", func(t *testing.T) {
		w := startNode(t, p, nodeSpec{addr: "127.0.0.3"})

		_, err := nodeClient(w.dialAs(t, p, role.Admin)).GenerateClientConfiguration(callCtx(t),
			&node.GenerateClientConfigurationRequest{Roles: []string{role.Reader}})
		require.Error(t, err)
		assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
		assert.Contains(t, err.Error(), "control-plane nodes only")
	})
}
