package integration

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certcheck"
	"github.com/nodepki/nodepki/pkg/certs"
)

// certsCheck runs `nodepkictl certs check` on the cluster and returns stdout, stderr and the exit
// code. No kubeconfig of the machine running the test is read.
func certsCheck(t testing.TB, talosconfig string, args ...string) (stdout, stderr string, code int) {
	t.Helper()

	cmd := exec.Command(nodepkictl, append([]string{"--talosconfig", talosconfig, "--no-expiry-warning", "certs", "check"}, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(t.TempDir(), "absent"))

	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut

	err := cmd.Run()

	var exitErr *exec.ExitError

	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		require.NoError(t, err)
	}

	return out.String(), errOut.String(), code
}

// writeKubeconfig writes a kubeconfig whose user has a client certificate of ca valid for lifetime
// and whose cluster trusts serverCA.
func writeKubeconfig(t *testing.T, ca *certs.CA, serverCA []byte, lifetime time.Duration) string {
	t.Helper()

	crt, key, err := ca.Issue(certs.ClientProfile([]string{"system:masters"}, lifetime), time.Now())
	require.NoError(t, err)

	b64 := base64.StdEncoding.EncodeToString
	path := filepath.Join(t.TempDir(), "kubeconfig")

	require.NoError(t, os.WriteFile(path, fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: it
  cluster:
    server: https://127.0.100.250:6443
    certificate-authority-data: %s
users:
- name: admin@it
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: admin@it
  context:
    cluster: it
    user: admin@it
current-context: admin@it
`, b64(serverCA), b64(crt), b64(key)), 0o600))

	return path
}

func TestCertsCheck(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.100.10", 1, 2)
	nodes := c.Addresses()

	b, err := bundle.Load(filepath.Join(c.Dir, "secrets.yaml"))
	require.NoError(t, err)

	t.Run("0: everything fine", func(t *testing.T) {
		stdout, stderr, code := certsCheck(t, c.Talosconfig)
		require.Equal(t, certcheck.ExitOK, code, "%s\n%s", stdout, stderr)

		assert.Contains(t, stdout, "NODE")
		assert.Contains(t, stdout, "all (3)", "a CA every node accepts is one row")
		assert.Contains(t, stderr, "no kubeconfig at")

		for _, n := range nodes {
			assert.Contains(t, stdout, n)
		}
	})

	t.Run("json: every leaf of every node, every CA, the client", func(t *testing.T) {
		stdout, stderr, code := certsCheck(t, c.Talosconfig, "-o", "json")
		require.Equal(t, certcheck.ExitOK, code, stderr)

		var report certcheck.Report
		require.NoError(t, json.Unmarshal([]byte(stdout), &report))

		leaves := map[string]int{}
		roots := map[string]bool{}
		clients := 0

		for _, item := range report.Items {
			assert.Equal(t, certcheck.StateOK, item.State, "%+v", item)
			assert.True(t, item.Trusted, "%+v", item)

			switch item.Kind {
			case certcheck.KindLeaf:
				leaves[item.Nodes[0]]++
			case certcheck.KindCA:
				roots[item.Root] = true

				// Workers accept the OS CA (and what their own leaves need); the control plane all.
				assert.Contains(t, item.Nodes, nodes[0], "%+v", item)

				if item.Root == "os" {
					assert.ElementsMatch(t, nodes, item.Nodes)
				}
			case certcheck.KindClient:
				clients++
			}
		}

		for _, n := range nodes {
			assert.Positive(t, leaves[n], "leaves of %s", n)
		}

		assert.Equal(t, map[string]bool{"os": true, "etcd": true, "kubernetes": true, "aggregator": true}, roots)
		assert.Equal(t, 1, clients)
		assert.Equal(t, 0, report.ExitCode)
	})

	t.Run("1: the client certificate expires within --warn", func(t *testing.T) {
		stdout, stderr, code := certsCheck(t, c.Talosconfig, "--warn", "8800h")
		require.Equal(t, certcheck.ExitProblem, code, "%s\n%s", stdout, stderr)
		assert.Regexp(t, `\(client\)\s+client\s+os\s+talosconfig .* expiring\s+renew it: nodepkictl config renew`, stdout)
		assert.Contains(t, stderr, "error: certs check: 1 certificate(s) expiring")
	})

	t.Run("1: a kubeconfig of this cluster expires soon; one of another cluster is left out", func(t *testing.T) {
		kubeCA, err := certs.LoadCA(b.Certs.K8s.Crt, b.Certs.K8s.Key)
		require.NoError(t, err)

		stdout, stderr, code := certsCheck(t, c.Talosconfig, "--kubeconfig", writeKubeconfig(t, kubeCA, b.Certs.K8s.Crt, 5*24*time.Hour))
		require.Equal(t, certcheck.ExitProblem, code, "%s\n%s", stdout, stderr)
		assert.Regexp(t, `client\s+kubernetes\s+kubeconfig .* "admin@it"\s+\S+\s+4\s+true\s+expiring`, stdout)

		otherCrt, otherKey, err := certs.NewRootCA(certs.RootKubernetes)
		require.NoError(t, err)

		other, err := certs.LoadCA(otherCrt, otherKey)
		require.NoError(t, err)

		stdout, stderr, code = certsCheck(t, c.Talosconfig, "--kubeconfig", writeKubeconfig(t, other, otherCrt, 5*24*time.Hour))
		require.Equal(t, certcheck.ExitOK, code, "%s\n%s", stdout, stderr)
		assert.Contains(t, stderr, "is not for this cluster: not checked")
	})

	t.Run("2: a node cannot be reached, even with problems", func(t *testing.T) {
		nodesFlag := strings.Join(append(nodes, "127.0.100.99"), ",")

		stdout, stderr, code := certsCheck(t, c.Talosconfig, "--nodes", nodesFlag, "--warn", "8800h")
		require.Equal(t, certcheck.ExitUnreachable, code, "%s\n%s", stdout, stderr)
		assert.Contains(t, stderr, "unreachable: 127.0.100.99:")
		assert.Contains(t, stderr, "1 node(s) unreachable")

		_, stderr, code = certsCheck(t, c.Talosconfig, "--endpoints", "127.0.100.99")
		require.Equal(t, certcheck.ExitUnreachable, code, stderr)
		assert.Contains(t, stderr, "listing the cluster members on endpoint 127.0.100.99")
	})

	t.Run("3: usage and configuration errors", func(t *testing.T) {
		for _, args := range [][]string{
			{"-o", "yaml"},
			{"--warn", "-1h"},
			{"--warn", "soon"},
			{"--no-such-flag"},
			{"extra-argument"},
			{"--kubeconfig", filepath.Join(t.TempDir(), "missing")},
		} {
			_, stderr, code := certsCheck(t, c.Talosconfig, args...)
			assert.Equal(t, certcheck.ExitUsage, code, "%v: %s", args, stderr)
		}

		_, stderr, code := certsCheck(t, filepath.Join(t.TempDir(), "no-talosconfig"))
		assert.Equal(t, certcheck.ExitUsage, code, stderr)
		assert.Contains(t, stderr, "does not exist")
	})
}
