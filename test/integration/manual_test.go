package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/resources/pki"
)

// TestManualRotationFromDocs runs the by-hand OS CA rotation of docs/rotation.md, exactly as
// written there, against a real cluster and checks that it converges: the documented procedure
// works.
func TestManualRotationFromDocs(t *testing.T) {
	t.Parallel()

	script := manualProcedure(t)

	c := startCluster(t, "127.0.13.2", 1, 2)
	work := t.TempDir()
	oldContext := currentContext(t, c.Talosconfig)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	cmd := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n"+script)
	cmd.Dir = work
	cmd.Env = append(os.Environ(),
		"PATH="+filepath.Dir(nodepkictl)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"TALOSCONFIG="+c.Talosconfig,
		"CONTROL_PLANES="+strings.Join(c.ControlPlanes(), " "),
		"WORKERS="+strings.Join(workers(c.Nodes), " "),
	)

	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the documented procedure failed:\n%s", out)

	// The procedure says which CA it rotates to, and deletes the files that hold keys.
	m := regexp.MustCompile(`rotating the OS CA [0-9a-f]{64} -> ([0-9a-f]{64})`).FindStringSubmatch(string(out))
	require.NotNil(t, m, "%s", out)

	newFP := m[1]

	entries, err := os.ReadDir(work)
	require.NoError(t, err)
	assert.Empty(t, entries, "the procedure leaves no file behind")

	// The talosconfig's context now holds the final credentials.
	cl := connect(t, c.Talosconfig)

	for _, node := range c.Addresses() {
		nodeCtx := client.WithNode(t.Context(), node)

		accepted, err := safe.StateGetByID[*pki.AcceptedCA](nodeCtx, cl.COSI(), pki.RootOS)
		require.NoError(t, err, node)
		assert.Equal(t, []string{newFP}, accepted.TypedSpec().Fingerprints, node)

		status, err := safe.StateGetByID[*pki.CertificateStatus](nodeCtx, cl.COSI(), pki.CertAPI)
		require.NoError(t, err, node)
		assert.Equal(t, newFP, status.TypedSpec().IssuerFingerprint, node)
		assert.True(t, status.TypedSpec().Trusted, node)

		_, err = version(t, oldContext, node)
		assert.Error(t, err, "%s still accepts the old talosconfig", node)
	}
}

// manualProcedure extracts the bash blocks of the by-hand procedure from docs/rotation.md,
// leaving out the one the reader edits (its variables come from the test).
func manualProcedure(t *testing.T) string {
	t.Helper()

	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "rotation.md"))
	require.NoError(t, err)

	_, section, ok := strings.Cut(string(doc), "<!-- manual-os-rotation:begin -->")
	require.True(t, ok, "docs/rotation.md has no manual-os-rotation:begin marker")

	section, _, ok = strings.Cut(section, "<!-- manual-os-rotation:end -->")
	require.True(t, ok, "docs/rotation.md has no manual-os-rotation:end marker")

	var blocks []string

	for _, m := range regexp.MustCompile("(?s)```bash\n(.*?)```").FindAllStringSubmatch(section, -1) {
		if strings.HasPrefix(m[1], "# Set these for your cluster") {
			continue
		}

		blocks = append(blocks, m[1])
	}

	require.GreaterOrEqual(t, len(blocks), 4, "the procedure has too few steps")

	return strings.Join(blocks, "\n")
}

func workers(nodes []cluster.Node) []string {
	var out []string

	for _, n := range nodes {
		if n.Type == "worker" {
			out = append(out, n.Address)
		}
	}

	return out
}
