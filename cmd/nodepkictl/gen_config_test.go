package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	talosclient "github.com/siderolabs/talos/pkg/machinery/client/config"
	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/role"
)

const genConfigEndpoint = "https://cp.demo.test:6443"

// runGenConfigCLI runs `gen config` in a fresh command tree, so flag values never leak between tests.
func runGenConfigCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()

	root := &cobra.Command{Use: "nodepkictl", SilenceUsage: true, SilenceErrors: true}
	gen := &cobra.Command{Use: "gen"}
	gen.AddCommand(newGenConfigCmd())
	root.AddCommand(gen)

	var out, errOut bytes.Buffer

	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(append([]string{"gen", "config"}, args...))

	err = root.ExecuteContext(t.Context())

	return out.String(), errOut.String(), err
}

// writeSecrets writes a fresh secrets bundle into dir and returns it and its path.
func writeSecrets(t *testing.T, dir string) (*bundle.Bundle, string) {
	t.Helper()

	b, err := bundle.Generate()
	require.NoError(t, err)

	path := filepath.Join(dir, "secrets.yaml")
	require.NoError(t, b.WriteFile(path, false))

	return b, path
}

func readConfig(t *testing.T, path string) *machineconfig.Config {
	t.Helper()

	data, err := os.ReadFile(path)
	require.NoError(t, err)

	cfg, err := machineconfig.Parse(data)
	require.NoError(t, err)
	require.NoError(t, cfg.Validate())

	return cfg
}

func TestGenConfigWithSecretsAndPatches(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	b, secretsPath := writeSecrets(t, dir)
	out := filepath.Join(dir, "out")

	commonPatch := filepath.Join(dir, "common.yaml")
	require.NoError(t, os.WriteFile(commonPatch, []byte("machine:\n  certSANs: [common.demo.test]\n"), 0o600))

	_, stderr, err := runGenConfigCLI(t, "demo", genConfigEndpoint,
		"--with-secrets", secretsPath,
		"-o", out,
		"--additional-sans", "san1.demo.test,10.9.9.9",
		"--config-patch", "@"+commonPatch,
		"--config-patch-control-plane", `[{"op": "add", "path": "/cluster/apiServer/certSANs/-", "value": "cp-only.demo.test"}]`,
		"--config-patch-worker", "machine:\n  nodeLabels:\n    role: worker-only\n",
	)
	require.NoError(t, err)
	assert.NotContains(t, stderr, "warning")
	assert.Contains(t, stderr, "wrote controlplane.yaml, worker.yaml and talosconfig to "+out)

	for _, name := range []string{controlPlaneFile, workerFile, talosconfigFile} {
		info, err := os.Stat(filepath.Join(out, name))
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), name)
	}

	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	assert.Len(t, entries, 3, "no temporary files are left behind")

	cp := readConfig(t, filepath.Join(out, controlPlaneFile))
	assert.True(t, cp.IsControlPlane())
	assert.Equal(t, string(b.Certs.OS.Key), string(cp.Document().Machine.CA.Key), "the configs come from --with-secrets")
	assert.Equal(t, []string{"san1.demo.test", "10.9.9.9", "common.demo.test"}, cp.Document().Machine.CertSANs)

	cpData, err := cp.Bytes()
	require.NoError(t, err)
	assert.Contains(t, string(cpData), "- cp-only.demo.test")
	assert.NotContains(t, string(cpData), "worker-only")

	worker := readConfig(t, filepath.Join(out, workerFile))
	assert.False(t, worker.IsControlPlane())
	assert.Empty(t, worker.Document().Machine.CA.Key)
	assert.Equal(t, []string{"san1.demo.test", "10.9.9.9", "common.demo.test"}, worker.Document().Machine.CertSANs)

	workerData, err := worker.Bytes()
	require.NoError(t, err)
	assert.Contains(t, string(workerData), "role: worker-only")
	assert.NotContains(t, string(workerData), "cp-only")

	checkAdminTalosconfig(t, filepath.Join(out, talosconfigFile), b)
}

// checkAdminTalosconfig checks the talosconfig as talosctl would use it: context, endpoints, the
// OS CA and an os:admin client certificate for a year that chains to it.
func checkAdminTalosconfig(t *testing.T, path string, b *bundle.Bundle) {
	t.Helper()

	data, err := os.ReadFile(path)
	require.NoError(t, err)

	cfg, err := clientconfig.Parse(data)
	require.NoError(t, err)
	assert.Equal(t, "demo", cfg.Context)

	ctx, err := cfg.Current()
	require.NoError(t, err)
	assert.Empty(t, ctx.Endpoints)
	assert.Contains(t, string(data), "endpoints: []", "talosctl requires the endpoints key")

	caPEM, err := ctx.CAPEM()
	require.NoError(t, err)
	assert.Equal(t, string(b.Certs.OS.Crt), string(caPEM))

	crtPEM, err := ctx.CrtPEM()
	require.NoError(t, err)

	keyPEM, err := ctx.KeyPEM()
	require.NoError(t, err)

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	key, err := certs.ParsePrivateKey(keyPEM)
	require.NoError(t, err)
	assert.True(t, certs.KeyMatchesCertificate(crt, key))

	assert.Equal(t, []string{role.Admin}, crt.Subject.Organization)
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, crt.ExtKeyUsage)
	assert.WithinDuration(t, time.Now().Add(certs.ClientLifetime), crt.NotAfter, time.Hour)

	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(b.Certs.OS.Crt)

	_, err = crt.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err)

	// talosctl reads it too.
	talosCfg, err := talosclient.FromBytes(data)
	require.NoError(t, err)
	require.Contains(t, talosCfg.Contexts, "demo")
	assert.Equal(t, "demo", talosCfg.Context)
	assert.Equal(t, ctx.Crt, talosCfg.Contexts["demo"].Crt)
}

func TestGenConfigWithoutSecretsWarns(t *testing.T) {
	t.Parallel()

	out := filepath.Join(t.TempDir(), "out")

	_, stderr, err := runGenConfigCLI(t, "demo", genConfigEndpoint, "-o", out)
	require.NoError(t, err)
	assert.Contains(t, stderr, "warning: no --with-secrets given")
	assert.Contains(t, stderr, "NOT saved")

	cp := readConfig(t, filepath.Join(out, controlPlaneFile))
	worker := readConfig(t, filepath.Join(out, workerFile))
	assert.Equal(t, string(cp.Document().Machine.CA.Crt), string(worker.Document().Machine.CA.Crt), "both configs come from one bundle")
	assert.NotContains(t, stderr, cp.Document().Machine.Token, "no secrets on the terminal")
}

func TestGenConfigForceOverwrites(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	_, secretsPath := writeSecrets(t, dir)
	out := filepath.Join(dir, "out")

	_, _, err := runGenConfigCLI(t, "demo", genConfigEndpoint, "--with-secrets", secretsPath, "-o", out)
	require.NoError(t, err)

	before, err := os.ReadFile(filepath.Join(out, talosconfigFile))
	require.NoError(t, err)

	_, _, err = runGenConfigCLI(t, "demo", genConfigEndpoint, "--with-secrets", secretsPath, "-o", out, "--force")
	require.NoError(t, err)

	after, err := os.ReadFile(filepath.Join(out, talosconfigFile))
	require.NoError(t, err)
	assert.NotEqual(t, string(before), string(after), "a new client certificate was written")
}

// TestGenConfigRefusesAndWritesNothing checks that every refused run leaves the output directory
// exactly as it was.
func TestGenConfigRefusesAndWritesNothing(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	_, secretsPath := writeSecrets(t, dir)

	brokenSecrets := filepath.Join(dir, "broken-secrets.yaml")
	require.NoError(t, os.WriteFile(brokenSecrets, []byte("cluster:\n  id: x\ncerts: [\n"), 0o600))

	tests := []struct {
		name     string
		existing []string // files present in the output directory before the run
		args     []string // after NAME ENDPOINT, -o and --with-secrets
		endpoint string
		wantErr  []string
	}{
		{
			name:     "an output file exists",
			existing: []string{talosconfigFile},
			wantErr:  []string{"refusing to overwrite", talosconfigFile, "--force"},
		},
		{
			name:    "secrets file missing",
			args:    []string{"--with-secrets", filepath.Join(dir, "nope.yaml")},
			wantErr: []string{"--with-secrets", "nope.yaml"},
		},
		{
			name:    "secrets file broken",
			args:    []string{"--with-secrets", brokenSecrets},
			wantErr: []string{"--with-secrets", "broken-secrets.yaml"},
		},
		{
			name:     "endpoint is not a URL",
			endpoint: "cp.demo.test:6443",
			wantErr:  []string{`endpoint "cp.demo.test:6443" is not an https URL`},
		},
		{
			name:    "patch is not valid YAML",
			args:    []string{"--config-patch", "machine: [\n"},
			wantErr: []string{"--config-patch", "invalid YAML", "line"},
		},
		{
			name:    "patch file missing",
			args:    []string{"--config-patch-worker", "@" + filepath.Join(dir, "missing-patch.yaml")},
			wantErr: []string{"--config-patch-worker", "missing-patch.yaml"},
		},
		{
			name:    "JSON patch on a missing path",
			args:    []string{"--config-patch-control-plane", `[{"op": "replace", "path": "/cluster/nothere/x", "value": 1}]`},
			wantErr: []string{controlPlaneFile, "/cluster/nothere/x"},
		},
		{
			name:    "patch making the worker invalid",
			args:    []string{"--config-patch-worker", "cluster:\n  ca:\n    key: " + b64String("not a key") + "\n"},
			wantErr: []string{workerFile, "cluster.ca.key", "not allowed on worker"},
		},
		{
			name:    "patch making both configs invalid",
			args:    []string{"--config-patch", "machine:\n  type: master\n"},
			wantErr: []string{controlPlaneFile, "machine.type", `unknown machine type "master"`},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			out := filepath.Join(t.TempDir(), "out")
			require.NoError(t, os.MkdirAll(out, 0o700))

			for _, name := range tc.existing {
				require.NoError(t, os.WriteFile(filepath.Join(out, name), []byte("keep me\n"), 0o600))
			}

			before := snapshot(t, out)

			endpoint := genConfigEndpoint
			if tc.endpoint != "" {
				endpoint = tc.endpoint
			}

			args := []string{"demo", endpoint, "-o", out}
			if !strings.Contains(strings.Join(tc.args, " "), "--with-secrets") {
				args = append(args, "--with-secrets", secretsPath)
			}

			_, _, err := runGenConfigCLI(t, append(args, tc.args...)...)
			require.Error(t, err)

			for _, want := range tc.wantErr {
				assert.Contains(t, err.Error(), want)
			}

			assert.Equal(t, before, snapshot(t, out), "a refused run changed the output directory")
		})
	}
}

func TestGenConfigNeedsNameAndEndpoint(t *testing.T) {
	t.Parallel()

	_, _, err := runGenConfigCLI(t, "demo")
	require.ErrorContains(t, err, "accepts 2 arg(s)")
}

// snapshot is every file of dir with its content.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)

	out := map[string]string{}

	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		require.NoError(t, err)

		out[e.Name()] = string(data)
	}

	return out
}

func b64String(s string) string {
	return base64.StdEncoding.EncodeToString([]byte(s))
}
