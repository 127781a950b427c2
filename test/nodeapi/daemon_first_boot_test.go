package nodeapi_test

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// lockedBuffer collects a process's output for a test that reads it while the process runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.buf.String()
}

// TestDaemonFirstBootPersistsOnlyWhenServing: a first boot that fails (its port in use) persists
// nothing, so the corrected --config of the next start is the one the node runs with; once a
// config is persisted, a different --config is reported at warn level with the way to apply it.
func TestDaemonFirstBootPersistsOnlyWhenServing(t *testing.T) {
	t.Parallel()

	const address = "127.0.63.2"

	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets.yaml")
	out, err := ctl(t, t.Context(), "gen", "secrets", "-o", secrets)
	require.NoError(t, err, out)
	out, err = ctl(t, t.Context(), "gen", "config", "boot", "https://"+address+":6443", "--with-secrets", secrets, "-o", filepath.Join(dir, "out"))
	require.NoError(t, err, out)

	original := filepath.Join(dir, "out", "controlplane.yaml")
	corrected := filepath.Join(dir, "corrected.yaml")
	out, err = ctl(t, t.Context(), "gen", "config", "boot", "https://"+address+":6443", "--with-secrets", secrets, "-o", filepath.Join(dir, "unused"),
		"--config-patch", `{"machine": {"certSANs": ["corrected.example"]}}`)
	require.NoError(t, err, out)
	require.NoError(t, os.Rename(filepath.Join(dir, "unused", "controlplane.yaml"), corrected))

	stateDir := filepath.Join(dir, "state")
	talosconfig := filepath.Join(dir, "out", "talosconfig")

	// First boot: the node API port is taken.
	taken, err := net.Listen("tcp", address+":50000")
	require.NoError(t, err)

	failed, err := exec.CommandContext(t.Context(), filepath.Join(binDir, "nodepkid"),
		"--config", original, "--state-dir", stateDir, "--address", address, "--host-addresses=false").CombinedOutput()
	require.Error(t, err, string(failed))
	assert.Contains(t, string(failed), "address already in use")
	require.NoError(t, taken.Close())

	// Second start with the corrected file: it is a first boot still.
	stop := startDaemon(t, "--config", corrected, "--state-dir", stateDir, "--address", address)

	sans, err := ctl(t, t.Context(), "--talosconfig", talosconfig, "-e", address, "-n", address,
		"get", "machineconfig", "-o", "jsonpath={.spec.machine.certSANs}")
	require.NoError(t, err, sans)
	assert.Contains(t, sans, "corrected.example", "the node runs with the corrected --config")

	log := stop()
	assert.Contains(t, log, "machine config loaded from file")
	assert.NotContains(t, log, "persisted")

	// Third start with the original file, which now differs from the persisted config.
	log = startDaemon(t, "--config", original, "--state-dir", stateDir, "--address", address)()

	warn := ""

	for line := range strings.Lines(log) {
		if strings.Contains(line, "--config differs") {
			warn = line
		}
	}

	assert.Contains(t, warn, "\twarn\t")
	assert.Contains(t, warn, "apply-config -f "+original)
	assert.Contains(t, warn, "ignored_file")
}

// startDaemon runs nodepkid until it serves; the function it returns stops it (SIGTERM) and
// returns its output.
func startDaemon(t *testing.T, args ...string) func() string {
	t.Helper()

	var output lockedBuffer

	// Not tied to the test's context, which ends before the cleanup that stops the daemon.
	cmd := exec.Command(filepath.Join(binDir, "nodepkid"), append(args, "--host-addresses=false")...)
	cmd.Stdout, cmd.Stderr = &output, &output
	require.NoError(t, cmd.Start())

	exited := make(chan error, 1)

	go func() { exited <- cmd.Wait() }()

	serving := false

	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && !serving; {
		select {
		case err := <-exited:
			require.FailNow(t, "nodepkid exited", "%v\n%s", err, output.String())
		case <-time.After(50 * time.Millisecond):
		}

		serving = strings.Contains(output.String(), "node API serving")
	}

	require.True(t, serving, "nodepkid did not serve:\n%s", output.String())

	stopped := false
	stop := func() string {
		if !stopped {
			stopped = true

			require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
			require.NoError(t, <-exited, output.String())
		}

		return output.String()
	}

	t.Cleanup(func() { stop() })

	return stop
}
