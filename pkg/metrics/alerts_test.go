package metrics_test

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestAlertRules checks the shipped alert rules and runs their unit tests with Prometheus's own
// promtool (Debian: apt-get install prometheus; .ci/run installs it).
func TestAlertRules(t *testing.T) {
	t.Parallel()

	promtool, err := exec.LookPath("promtool")
	require.NoError(t, err, "promtool is needed: apt-get install prometheus")

	dir := filepath.Join("..", "..", "docs", "alerts")

	for _, args := range [][]string{
		{"check", "rules", "nodepki.rules.yml"},
		{"test", "rules", "nodepki.rules_test.yml"},
	} {
		cmd := exec.CommandContext(t.Context(), promtool, args...)
		cmd.Dir = dir

		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %v:\n%s", args, out)
	}
}
