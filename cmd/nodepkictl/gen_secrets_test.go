package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
)

// runSecretsConfigCLI runs gen secrets / config commands in a fresh command tree, so flag
// values never leak from one test to the next.
func runSecretsConfigCLI(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()

	root := &cobra.Command{Use: "nodepkictl", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().String("talosconfig", "", "")
	root.PersistentFlags().String("context", "", "")

	gen := &cobra.Command{Use: "gen"}
	gen.AddCommand(newGenSecretsCmd())
	root.AddCommand(gen, newConfigCmd())

	var out, errOut bytes.Buffer

	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)

	err = root.ExecuteContext(t.Context())

	return out.String(), errOut.String(), err
}

func TestGenSecretsWritesPrivateFile(t *testing.T) {
	t.Parallel()

	path := filepath.Join(t.TempDir(), "secrets.yaml")

	stdout, stderr, err := runSecretsConfigCLI(t, "gen", "secrets", "-o", path)
	require.NoError(t, err)
	assert.Empty(t, stdout)
	assert.Contains(t, stderr, "wrote the secrets bundle to "+path+" (mode 0600)")
	assert.Contains(t, stderr, "os CA:")
	assert.Contains(t, stderr, "service-account key:")

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	b, err := bundle.Load(path)
	require.NoError(t, err)

	osCA, err := certs.ParseCertificate(b.Certs.OS.Crt)
	require.NoError(t, err)
	assert.Contains(t, stderr, certs.Fingerprint(osCA), "the printed fingerprint is the OS CA's")
	assert.NotContains(t, stderr, b.TrustdInfo.Token, "no secrets on the terminal")
}

func TestGenSecretsRefusesOverwrite(t *testing.T) {
	t.Parallel()

	path := filepath.Join(t.TempDir(), "secrets.yaml")

	_, _, err := runSecretsConfigCLI(t, "gen", "secrets", "-o", path)
	require.NoError(t, err)

	first, err := os.ReadFile(path)
	require.NoError(t, err)

	_, _, err = runSecretsConfigCLI(t, "gen", "secrets", "-o", path)
	require.EqualError(t, err, `file "`+path+`" already exists, use --force to overwrite`)

	unchanged, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, first, unchanged)

	_, _, err = runSecretsConfigCLI(t, "gen", "secrets", "-o", path, "--force")
	require.NoError(t, err)

	replaced, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.NotEqual(t, first, replaced)

	_, err = bundle.Parse(replaced)
	require.NoError(t, err)

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

func TestGenSecretsToStdout(t *testing.T) {
	t.Parallel()

	stdout, stderr, err := runSecretsConfigCLI(t, "gen", "secrets", "-o", "-")
	require.NoError(t, err)
	assert.Contains(t, stderr, "standard output")

	_, err = bundle.Parse([]byte(stdout))
	require.NoError(t, err)
}

func TestGenSecretsDefaultFileName(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)

	_, _, err := runSecretsConfigCLI(t, "gen", "secrets")
	require.NoError(t, err)

	_, err = bundle.Load(filepath.Join(dir, "secrets.yaml"))
	require.NoError(t, err)
}

// writeKubeadmDir lays out a kubeadm-style PKI directory with real CAs and service-account key.
func writeKubeadmDir(t *testing.T) string {
	t.Helper()

	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "etcd"), 0o700))

	for root, name := range map[string]string{
		certs.RootKubernetes: "ca",
		certs.RootEtcd:       filepath.Join("etcd", "ca"),
		certs.RootAggregator: "front-proxy-ca",
	} {
		crt, key, err := certs.NewRootCA(root)
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".crt"), crt, 0o644))
		require.NoError(t, os.WriteFile(filepath.Join(dir, name+".key"), key, 0o600))
	}

	sa, err := certs.NewServiceAccountKey()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sa.key"), sa, 0o600))

	return dir
}

func TestGenSecretsFromKubernetesPKI(t *testing.T) {
	t.Parallel()

	pki := writeKubeadmDir(t)
	path := filepath.Join(t.TempDir(), "secrets.yaml")

	_, stderr, err := runSecretsConfigCLI(t, "gen", "secrets", "-o", path,
		"--from-kubernetes-pki", pki, "--kubernetes-bootstrap-token", "abcdef.0123456789abcdef")
	require.NoError(t, err)
	assert.Contains(t, stderr, "from "+filepath.Join(pki, "ca.crt"))
	assert.Contains(t, stderr, "from "+filepath.Join(pki, "etcd", "ca.crt"))
	assert.Contains(t, stderr, "from "+filepath.Join(pki, "front-proxy-ca.crt"))
	assert.Contains(t, stderr, "from "+filepath.Join(pki, "sa.key"))

	b, err := bundle.Load(path)
	require.NoError(t, err)

	for file, got := range map[string][]byte{
		"ca.crt":             b.Certs.K8s.Crt,
		"ca.key":             b.Certs.K8s.Key,
		"etcd/ca.crt":        b.Certs.Etcd.Crt,
		"etcd/ca.key":        b.Certs.Etcd.Key,
		"front-proxy-ca.crt": b.Certs.K8sAggregator.Crt,
		"front-proxy-ca.key": b.Certs.K8sAggregator.Key,
		"sa.key":             b.Certs.K8sServiceAccount.Key,
	} {
		want, err := os.ReadFile(filepath.Join(pki, file))
		require.NoError(t, err)
		assert.Equal(t, want, got, file)
	}

	assert.Equal(t, "abcdef.0123456789abcdef", b.Secrets.BootstrapToken)
}

func TestGenSecretsRejectsBadInput(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name string
		args func(t *testing.T, pki string) []string
		want string
	}{
		{
			"bad bootstrap token",
			func(_ *testing.T, pki string) []string {
				return []string{"--from-kubernetes-pki", pki, "-t", "test-token"}
			},
			"kubernetes bootstrap token: not a valid token",
		},
		{
			"token without pki",
			func(*testing.T, string) []string { return []string{"-t", "abcdef.0123456789abcdef"} },
			"--kubernetes-bootstrap-token is only used with --from-kubernetes-pki",
		},
		{
			"mismatched etcd key",
			func(t *testing.T, pki string) []string {
				key, err := os.ReadFile(filepath.Join(pki, "ca.key"))
				require.NoError(t, err)
				require.NoError(t, os.WriteFile(filepath.Join(pki, "etcd", "ca.key"), key, 0o600))

				return []string{"-p", pki}
			},
			filepath.Join("etcd", "ca.key") + ": key does not match the certificate",
		},
		{
			"missing directory",
			func(_ *testing.T, pki string) []string { return []string{"-p", filepath.Join(pki, "absent")} },
			"kubernetes PKI directory",
		},
		{"unexpected argument", func(*testing.T, string) []string { return []string{"extra"} }, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			dir := t.TempDir()
			path := filepath.Join(dir, "secrets.yaml")

			_, _, err := runSecretsConfigCLI(t, append([]string{"gen", "secrets", "-o", path}, tc.args(t, writeKubeadmDir(t))...)...)
			require.ErrorContains(t, err, tc.want)

			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Empty(t, entries, "nothing is written")
		})
	}
}
