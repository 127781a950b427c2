package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client/clienttest"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
)

// otherCluster is a kubeconfig of another cluster that uses the names nodepki's would.
const otherCluster = `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: https://other.example:6443
users:
- name: admin@test
  user:
    token: keep-me
contexts:
- name: admin@test
  context:
    cluster: test
    user: admin@test
current-context: admin@test
`

func TestKubeconfig(t *testing.T) {
	// Not parallel: subtests set $KUBECONFIG.
	srv, talosconfig := startNode(t, "node1")
	dir := t.TempDir()

	run := func(t *testing.T, args ...string) (string, string, error) {
		t.Helper()

		return runCLI(t.Context(), t, append([]string{"--talosconfig", talosconfig, "kubeconfig"}, args...)...)
	}

	existing := filepath.Join(dir, "existing")
	require.NoError(t, os.WriteFile(existing, []byte("keep me"), 0o600))

	t.Run("refusals change nothing and ask for nothing", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{existing, "--merge=false"}, existing + " already exists: pass --force"},
			{[]string{existing}, existing + " is not a kubeconfig that can be merged into"},
			{[]string{filepath.Join(dir, "a"), "--crt-ttl", "-1h"}, "--crt-ttl must be at least one second"},
			{[]string{filepath.Join(dir, "a"), "--merge=false", "--force-context-name", "x"}, "--force-context-name names the merged context: it needs --merge"},
		} {
			before := len(srv.Node.Kubeconfigs())

			_, _, err := run(t, tc.args...)
			require.ErrorContains(t, err, tc.want)

			data, err := os.ReadFile(existing)
			require.NoError(t, err)
			assert.Equal(t, "keep me", string(data))
			assert.NoFileExists(t, filepath.Join(dir, "a"))

			assert.Len(t, srv.Node.Kubeconfigs(), before, "%v: no kubeconfig is requested when the command is refused", tc.args)
		}

		_, _, err := runCLI(t.Context(), t, "--talosconfig", talosconfig, "-n", "node1,node2", "kubeconfig", filepath.Join(dir, "b"))
		assert.ErrorContains(t, err, "kubeconfig asks a single node, got 2 nodes")
	})

	t.Run("a new file, forced over an existing one, 0600", func(t *testing.T) {
		out, _, err := run(t, existing, "--merge=false", "--force", "--crt-ttl", "24h")
		require.NoError(t, err)
		assert.Contains(t, out, "wrote "+existing)

		cfg := loadKubeconfig(t, existing)
		assert.Equal(t, "admin@test", cfg.CurrentContext)
		checkAdminCertificate(t, srv, cfg, "admin@test", 24*time.Hour)

		reqs := srv.Node.Kubeconfigs()
		assert.Equal(t, int64(24*3600), reqs[len(reqs)-1].GetCrtTtlSeconds())
	})

	t.Run("a directory gets a file named kubeconfig; the lifetime defaults to the node's", func(t *testing.T) {
		sub := t.TempDir()

		_, _, err := run(t, sub, "--merge=false")
		require.NoError(t, err)
		checkAdminCertificate(t, srv, loadKubeconfig(t, filepath.Join(sub, "kubeconfig")), "admin@test", kubeconfig.AdminLifetime)

		reqs := srv.Node.Kubeconfigs()
		assert.Zero(t, reqs[len(reqs)-1].GetCrtTtlSeconds())
	})

	t.Run("stdout", func(t *testing.T) {
		out, _, err := run(t, "-")
		require.NoError(t, err)

		cfg, err := clientcmd.Load([]byte(out))
		require.NoError(t, err)
		assert.Equal(t, clienttest.KubeconfigServer, cfg.Clusters["test"].Server)
	})

	t.Run("merge into $KUBECONFIG keeps another cluster's entries", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "config")
		require.NoError(t, os.WriteFile(path, []byte(otherCluster), 0o644))
		t.Setenv("KUBECONFIG", path+string(os.PathListSeparator)+filepath.Join(dir, "second"))

		out, errOut, err := run(t)
		require.NoError(t, err)
		assert.Contains(t, out, `merged context "admin@test-1" into `+path)
		assert.Contains(t, errOut, `renamed context "admin@test" -> "admin@test-1"`)

		cfg := loadKubeconfig(t, path)
		assert.Equal(t, "keep-me", cfg.AuthInfos["admin@test"].Token)
		assert.Equal(t, "https://other.example:6443", cfg.Clusters["test"].Server)
		checkAdminCertificate(t, srv, cfg, "admin@test-1", kubeconfig.AdminLifetime)

		// Again: fresh credentials replace the merged ones, nothing else is renamed further.
		_, _, err = run(t, "-m")
		require.NoError(t, err)

		cfg = loadKubeconfig(t, path)
		assert.Len(t, cfg.Contexts, 2)
		assert.Equal(t, "admin@test-1", cfg.CurrentContext)

		_, _, err = run(t, "--force-context-name", "lab")
		require.NoError(t, err)
		assert.Equal(t, "lab", loadKubeconfig(t, path).CurrentContext)
	})

	t.Run("a symlinked kubeconfig stays a symlink", func(t *testing.T) {
		sub := t.TempDir()
		target := filepath.Join(sub, "real-config")
		link := filepath.Join(sub, "config")
		require.NoError(t, os.WriteFile(target, []byte(otherCluster), 0o600))
		require.NoError(t, os.Symlink(target, link))

		_, _, err := run(t, link)
		require.NoError(t, err)

		info, err := os.Lstat(link)
		require.NoError(t, err)
		assert.Equal(t, os.ModeSymlink, info.Mode().Type())
		checkAdminCertificate(t, srv, loadKubeconfig(t, target), "admin@test-1", kubeconfig.AdminLifetime)
	})

	t.Run("merge into ~/.kube/config by default, creating it", func(t *testing.T) {
		home := t.TempDir()
		t.Setenv("HOME", home)
		t.Setenv("KUBECONFIG", "")

		_, _, err := run(t)
		require.NoError(t, err)

		path := filepath.Join(home, ".kube", "config")
		checkAdminCertificate(t, srv, loadKubeconfig(t, path), "admin@test", kubeconfig.AdminLifetime)
	})
}

func loadKubeconfig(t *testing.T, path string) *clientcmdapi.Config {
	t.Helper()

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), path)

	cfg, err := clientcmd.LoadFromFile(path)
	require.NoError(t, err)

	return cfg
}

func checkAdminCertificate(t *testing.T, srv *clienttest.Server, cfg *clientcmdapi.Config, context string, lifetime time.Duration) {
	t.Helper()

	require.Contains(t, cfg.Contexts, context)

	crt, err := certs.ParseCertificate(cfg.AuthInfos[cfg.Contexts[context].AuthInfo].ClientCertificateData)
	require.NoError(t, err)
	assert.Equal(t, "admin", crt.Subject.CommonName)
	assert.NoError(t, crt.CheckSignatureFrom(srv.KubernetesCA.Crt))
	assert.WithinDuration(t, time.Now().Add(lifetime), crt.NotAfter, time.Minute)
}
