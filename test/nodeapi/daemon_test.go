package nodeapi_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDaemonRefusesBadInput proves that nodepkid refuses bad flags and configs with an error that
// says what is wrong, before it creates any state.
func TestDaemonRefusesBadInput(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(badYAML, []byte("machine: ["), 0o600))

	out, err := ctl(t, t.Context(), "gen", "config", "demo", "https://127.0.0.2:6443", "-o", filepath.Join(dir, "out"))
	require.NoError(t, err, out)

	workerWithKey := filepath.Join(dir, "worker-with-key.yaml")
	cpConfig, err := os.ReadFile(filepath.Join(dir, "out", "controlplane.yaml"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(workerWithKey, []byte(strings.Replace(string(cpConfig), "type: controlplane", "type: worker", 1)), 0o600))

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no config on first boot", nil, "pass --config FILE on first boot"},
		{"port out of range", []string{"--config", filepath.Join(dir, "out", "worker.yaml"), "--api-port", "70000"}, "--api-port 70000 is not a port"},
		{"invalid YAML", []string{"--config", badYAML}, "invalid YAML"},
		{"worker carrying CA keys", []string{"--config", workerWithKey}, "machine.ca.key"},
		{"address not an IP", []string{"--config", badYAML, "--address", "node-1"}, "--address"},
		{"hostname not a host name", []string{"--config", filepath.Join(dir, "out", "worker.yaml"), "--hostname", "node_1\n"}, `--hostname "node_1\n" is not a host name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stateDir := filepath.Join(dir, "state-"+filepath.Base(t.Name()))
			args := append([]string{"--state-dir", stateDir, "--address", "127.0.23.9"}, tc.args...)

			output, err := exec.CommandContext(t.Context(), filepath.Join(binDir, "nodepkid"), args...).CombinedOutput()
			require.Error(t, err, string(output))
			assert.Contains(t, string(output), tc.want)
			assert.NoDirExists(t, stateDir, "a refused start leaves no state")
		})
	}
}
