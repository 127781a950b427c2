package integration

import (
	"bufio"
	"errors"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRotateInterruptedByCtrlC sends SIGINT (Ctrl-C) to rotate-ca in the middle of a rotation
// (during the pause after the transitional talosconfig): it says it was interrupted and that the
// same command resumes, and the same command then finishes the rotation from the plan.
func TestRotateInterruptedByCtrlC(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.65.2", 1, 1)

	cmd := nodepkictlCmd(c, "rotate-ca", "--os", "--dry-run=false", "--client-grace", "1m")

	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)

	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())

	var out strings.Builder

	interrupted := false
	scanner := bufio.NewScanner(stdout)

	for scanner.Scan() {
		line := scanner.Text()
		out.WriteString(line + "\n")

		if !interrupted && strings.Contains(line, ": transitional (") {
			require.NoError(t, cmd.Process.Signal(syscall.SIGINT))

			interrupted = true
		}
	}

	err = cmd.Wait()
	require.True(t, interrupted, "rotate-ca never wrote the transitional talosconfig:\n%s", out.String())

	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "rotate-ca did not fail: %v\n%s", err, out.String())
	assert.Equal(t, 1, exitErr.ExitCode())
	assert.Contains(t, out.String(), "rotate-ca interrupted: nothing is lost; rerun the same command to resume")
	assert.NotContains(t, out.String(), "context canceled")

	again, err := runCLI(t, c, "rotate-ca", "--os", "--dry-run=false")
	require.NoError(t, err, again)
	assert.Contains(t, again, "resuming")
	assert.Contains(t, again, "rotation complete: os")
}
