package integration

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestRevokeTalosconfig: a reader credential made with `config new` works on every node; once
// `revoke --talosconfig-file` has run, every node refuses it on new calls, saying it was revoked,
// its open `get -w` streams end, the admin credential is unaffected, and a restarted node still
// refuses it.
func TestRevokeTalosconfig(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.120.2", 1, 2)
	nodes := c.Addresses()
	reader := filepath.Join(t.TempDir(), "reader-talosconfig")

	out, err := runCLI(t, c, "-n", c.ControlPlanes()[0], "config", "new", reader, "--roles", "os:reader")
	require.NoError(t, err, out)

	asReader := func(args ...string) *exec.Cmd {
		return exec.Command(nodepkictl, append([]string{"--talosconfig", reader}, args...)...)
	}

	for _, node := range nodes {
		out, err := asReader("-n", node, "get", "certificatestatuses").CombinedOutput()
		require.NoError(t, err, "%s: %s", node, out)
	}

	// One open watch per node, all through the endpoint (the control plane forwards two of them).
	type openWatch struct {
		node   string
		stderr syncBuffer
		ended  chan error
	}

	watches := make([]*openWatch, 0, len(nodes))

	for _, node := range nodes {
		w := &openWatch{node: node, ended: make(chan error, 1)}
		cmd := asReader("-n", node, "get", "certificatestatuses", "--watch")
		cmd.Stderr = &w.stderr

		stdout, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())

		t.Cleanup(func() { cmd.Process.Kill() }) //nolint:errcheck // the process may have exited already

		firstLine := make(chan struct{})

		go func() {
			sc := bufio.NewScanner(stdout)
			if sc.Scan() {
				close(firstLine)
			}

			io.Copy(io.Discard, stdout) //nolint:errcheck // drains the pipe; its end is the process's end
			w.ended <- cmd.Wait()
		}()

		select {
		case <-firstLine:
		case err := <-w.ended:
			t.Fatalf("the watch on %s ended at once: %v\n%s", node, err, w.stderr.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("the watch on %s printed nothing", node)
		}

		watches = append(watches, w)
	}

	// Revoking the credential revoke connects with is refused without --force, and changes nothing.
	out, err = runCLI(t, c, "revoke", "--talosconfig-file", c.Talosconfig)
	require.Error(t, err, out)
	assert.Contains(t, out, "would revoke the credentials you are connected with")

	start := time.Now()
	out, err = runCLI(t, c, "revoke", "--talosconfig-file", reader, "--reason", "reader laptop lost")
	revoked := time.Now()
	require.NoError(t, err, out)
	t.Logf("revoke (%s):\n%s", revoked.Sub(start).Round(time.Millisecond), out)

	for _, node := range nodes {
		assert.Contains(t, out, node+": revoked, enforced")
	}

	assert.Contains(t, out, "--config-patch")
	assert.Contains(t, out, "revokedCertificates:")

	// revoke returns once every node refused the credential on a new connection; each open
	// watch must be over within 2 s of that.
	for _, w := range watches {
		select {
		case err := <-w.ended:
			t.Logf("get -w on %s exited: %v", w.node, err)
			assert.Contains(t, w.stderr.String(), "revoked", "the watch on %s says why it ended", w.node)
			t.Logf("watch on %s ended %s after revoke returned: %s", w.node, time.Since(revoked).Round(time.Millisecond), strings.TrimSpace(w.stderr.String()))
		case <-time.After(time.Until(revoked.Add(2 * time.Second))):
			var logData []byte
			if n, err := c.Node(w.node); err == nil {
				logData, _ = os.ReadFile(n.Log) // only shown on failure
			}

			t.Errorf("the watch on %s is still open 2 s after revoke returned: %s\n%s", w.node, w.stderr.String(), logData)
		}
	}

	assertRefused := func(node string) {
		t.Helper()

		out, err := asReader("-n", node, "get", "certificatestatuses").CombinedOutput()
		require.Error(t, err, "%s accepted the revoked credential: %s", node, out)
		assert.Contains(t, string(out), "has been revoked", node)
		assert.Contains(t, string(out), "reader laptop lost", node)

		// Directly, without the control plane's forwarding.
		out, err = asReader("-e", node, "-n", node, "get", "certificatestatuses").CombinedOutput()
		require.Error(t, err, "%s accepted the revoked credential directly: %s", node, out)
		assert.Contains(t, string(out), "has been revoked", node)
	}

	for _, node := range nodes {
		assertRefused(node)

		out, err := runCLI(t, c, "-n", node, "get", "revocations", "-o", "yaml")
		require.NoError(t, err, "the admin credential is unaffected on %s: %s", node, out)
		assert.Contains(t, out, "reader laptop lost")
	}

	// A second run changes nothing.
	out, err = runCLI(t, c, "revoke", "--talosconfig-file", reader)
	require.NoError(t, err, out)

	for _, node := range nodes {
		assert.Contains(t, out, node+": already revoked, enforced")
	}

	// A restarted node still refuses it (the list is in its persisted machine config).
	worker := nodes[len(nodes)-1]
	require.NoError(t, c.Stop(worker))
	require.NoError(t, c.Start(worker))

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	require.NoError(t, c.WaitReady(ctx, io.Discard))
	assertRefused(worker)
}

// TestRevokeBadInputAndPrune: bad input is refused with the flag named, and changes nothing;
// --prune drops the expired entries only.
func TestRevokeBadInputAndPrune(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.121.2", 1, 0)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--serial", "XYZ", "--issuer", strings.Repeat("a", 64)}, "--serial"},
		{[]string{"--serial", "0A1B"}, "--issuer"},
		{[]string{"--fingerprint", "abc"}, "--fingerprint"},
		{[]string{"--serial", "0A1B", "--issuer", strings.Repeat("a", 64)}, "--issuer " + strings.Repeat("a", 64) + " is not the fingerprint of an OS CA"},
		{[]string{"--fingerprint", strings.Repeat("a", 64), "--serial", "0A"}, "only one of"},
		{nil, "nothing to revoke"},
	} {
		out, err := runCLI(t, c, append([]string{"revoke"}, tc.args...)...)
		require.Error(t, err, out)
		assert.Contains(t, out, tc.want)
	}

	out, err := runCLI(t, c, "get", "revocations", "-o", "yaml")
	require.NoError(t, err, out)
	assert.NotContains(t, out, "fingerprint:")

	expired, kept := strings.Repeat("e", 64), strings.Repeat("f", 64)
	out, err = runCLI(t, c, "patch", "machineconfig", "--patch",
		`{"machine": {"revokedCertificates": [{"fingerprint": "`+expired+`", "notAfter": "2020-01-01T00:00:00Z"}]}}`)
	require.NoError(t, err, out)

	out, err = runCLI(t, c, "revoke", "--fingerprint", kept, "--prune")
	require.NoError(t, err, out)
	assert.Contains(t, out, "revoked, 1 expired entries pruned, enforced")

	out, err = runCLI(t, c, "get", "revocations", "-o", "yaml")
	require.NoError(t, err, out)
	assert.Contains(t, out, kept)
	assert.NotContains(t, out, expired)
}

// TestRevokeRerunAndForce: a node that is down is reported and the command fails; once it is
// back, the same command completes on it and leaves the others as they are. Revoking one's own
// credential needs --force, and locks it out of every node.
func TestRevokeRerunAndForce(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.122.2", 1, 1)
	controlPlane, worker := c.ControlPlanes()[0], c.Addresses()[1]
	key := strings.Repeat("c", 64)

	require.NoError(t, c.Stop(worker))

	out, err := runCLI(t, c, "-n", controlPlane+","+worker, "revoke", "--fingerprint", key, "--reason", "rerun")
	require.Error(t, err, out)
	assert.Contains(t, out, controlPlane+": revoked, enforced")
	assert.Contains(t, out, worker+": FAILED")
	assert.Contains(t, out, "1 of 2 nodes did not take the change: "+worker+"; rerun the same command")

	require.NoError(t, c.Start(worker))

	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	require.NoError(t, c.WaitReady(ctx, io.Discard))

	out, err = runCLI(t, c, "-n", controlPlane+","+worker, "revoke", "--fingerprint", key, "--reason", "rerun")
	require.NoError(t, err, out)
	assert.Contains(t, out, controlPlane+": already revoked, enforced")
	assert.Contains(t, out, worker+": revoked, enforced")

	out, err = runCLI(t, c, "revoke", "--talosconfig-file", c.Talosconfig, "--force", "--reason", "self")
	require.NoError(t, err, out)

	for _, node := range c.Addresses() {
		out, err := runCLI(t, c, "-n", node, "get", "certificatestatuses")
		require.Error(t, err, "%s still accepts the self-revoked credential: %s", node, out)
		assert.Contains(t, out, "has been revoked", node)
	}
}
