package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/client/clienttest"
)

func TestPatchMachineConfig(t *testing.T) {
	t.Parallel()

	srv, path := startNode(t, "node1")

	const filePatch = "machine:\n    certSANs:\n        - api.example.com\n"

	patchFile := filepath.Join(t.TempDir(), "san.yaml")
	require.NoError(t, os.WriteFile(patchFile, []byte(filePatch), 0o600))

	const jsonPatch = `[{"op": "add", "path": "/machine/certSANs/-", "value": "10.5.0.100"}]`

	for _, tc := range []struct {
		name        string
		args        []string
		wantPatches []string
		wantDryRun  bool
		wantOut     string
		wantErr     string
	}{
		{
			name: "file and inline patches in order", args: []string{"patch", "machineconfig", "--patch", "@" + patchFile, "-p", jsonPatch},
			wantPatches: []string{filePatch, jsonPatch}, wantOut: "- node1: applied\n",
		},
		{
			name: "alias and dry run", args: []string{"patch", "mc", "--patch", jsonPatch, "--dry-run"},
			wantPatches: []string{jsonPatch}, wantDryRun: true,
			wantOut: "- node1: dry run: the config would change:\n" + testDiff,
		},
		{name: "no patch", args: []string{"patch", "mc"}, wantErr: "--patch is required"},
		{name: "empty patch", args: []string{"patch", "mc", "-p", "{}", "-p", " "}, wantErr: `--patch #2 (" ") is empty`},
		{name: "missing file", args: []string{"patch", "mc", "-p", "@" + patchFile + ".nope"}, wantErr: "--patch: open "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.Node.Applied())

			srv.Node.Set(func(n *clienttest.NodeService) {
				n.Changed = true
				n.Diff = testDiff
			})

			out, _, err := runCLI(t.Context(), t, append([]string{"--talosconfig", path}, tc.args...)...)

			calls := srv.Node.Applied()[before:]

			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.Empty(t, calls, "nothing is sent when a patch is refused locally")

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.wantOut, out)
			require.Len(t, calls, 1)

			var got []string
			for _, p := range calls[0].GetPatches() {
				got = append(got, string(p))
			}

			assert.Equal(t, tc.wantPatches, got)
			assert.Empty(t, calls[0].GetData())
			assert.Equal(t, tc.wantDryRun, calls[0].GetDryRun())
		})
	}
}
