package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/client/clienttest"
)

const testDiff = `--- a/config
+++ b/config
@@ -3 +3,2 @@
     certSANs:
+        - api.example.com
`

func TestApplyConfig(t *testing.T) {
	t.Parallel()

	srv, path := startNode(t, "node1", "node2")

	config := filepath.Join(t.TempDir(), "controlplane.yaml")
	require.NoError(t, os.WriteFile(config, []byte("version: v1alpha1\nmachine:\n    type: controlplane\n"), 0o600))

	empty := filepath.Join(t.TempDir(), "empty.yaml")
	require.NoError(t, os.WriteFile(empty, []byte("\n  \n"), 0o600))

	for _, tc := range []struct {
		name      string
		args      []string
		changed   bool
		applyErr  error
		wantOut   string
		wantErr   []string
		wantCalls int
		dryRun    bool
	}{
		{
			name: "dry run prints the diff of each node", args: []string{"apply-config", "-f", config, "--dry-run"}, changed: true,
			wantOut:   "- node1: dry run: the config would change:\n" + testDiff + "- node2: dry run: the config would change:\n" + testDiff,
			wantCalls: 2, dryRun: true,
		},
		{
			name: "dry run without changes", args: []string{"apply-config", "-f", config, "--dry-run", "-n", "node1"},
			wantOut: "- node1: dry run: no changes\n", wantCalls: 1, dryRun: true,
		},
		{
			name: "apply", args: []string{"apply-config", "--file", config}, changed: true,
			wantOut: "- node1: applied\n- node2: applied\n", wantCalls: 2,
		},
		{
			name: "apply without changes", args: []string{"apply", "-f", config, "-n", "node2"},
			wantOut: "- node2: applied (no changes)\n", wantCalls: 1,
		},
		{
			name: "refused by the nodes", args: []string{"apply-config", "-f", config},
			applyErr:  status.Error(codes.InvalidArgument, "machine.ca: required field is missing"),
			wantErr:   []string{"2 nodes failed:", "node1: rpc error: code = InvalidArgument desc = machine.ca: required field is missing", "node2: "},
			wantCalls: 2,
		},
		{
			name: "one node unreachable", args: []string{"apply-config", "-f", config, "-n", "node9,node1"}, changed: true,
			wantOut: "- node1: applied\n", wantErr: []string{`node9: rpc error: code = Unavailable desc = node "node9" is not reachable`}, wantCalls: 1,
		},
		{name: "no file", args: []string{"apply-config"}, wantErr: []string{"--file is required"}},
		{name: "missing file", args: []string{"apply-config", "-f", config + ".nope"}, wantErr: []string{"--file: open ", "no such file"}},
		{name: "empty file", args: []string{"apply-config", "-f", empty}, wantErr: []string{"is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.Node.Applied())

			srv.Node.Set(func(n *clienttest.NodeService) {
				n.Changed = tc.changed
				n.Diff = ""
				n.ApplyErr = tc.applyErr

				if tc.changed {
					n.Diff = testDiff
				}
			})

			out, _, err := runCLI(t.Context(), t, append([]string{"--talosconfig", path}, tc.args...)...)
			if len(tc.wantErr) > 0 {
				require.Error(t, err)

				for _, want := range tc.wantErr {
					assert.ErrorContains(t, err, want)
				}
			} else {
				require.NoError(t, err)
			}

			assert.Equal(t, tc.wantOut, out)

			calls := srv.Node.Applied()[before:]
			require.Len(t, calls, tc.wantCalls)

			for _, call := range calls {
				assert.Equal(t, "version: v1alpha1\nmachine:\n    type: controlplane\n", string(call.GetData()))
				assert.Empty(t, call.GetPatches())
				assert.Equal(t, tc.dryRun, call.GetDryRun())
			}
		})
	}
}
