package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/client/clienttest"
	"github.com/nodepki/nodepki/pkg/clientconfig"
)

// syncBuffer is a bytes.Buffer safe to read while a command writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()

	return b.buf.String()
}

// newTestRoot builds a fresh command tree with the commands of this area, as main wires them,
// so that tests can run in parallel without sharing flag values.
func newTestRoot() *cobra.Command {
	root := &cobra.Command{Use: "nodepkictl", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().String("talosconfig", "", "")
	addClientFlags(root.PersistentFlags())

	config := &cobra.Command{Use: "config"}
	config.AddCommand(newConfigNewCmd())

	root.AddCommand(newGetCmd(), newApplyConfigCmd(), newPatchCmd(), newVersionCmd(), newKubeconfigCmd(), config)

	return root
}

// runCLI runs nodepkictl in-process with args and returns what it printed.
func runCLI(ctx context.Context, t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()

	var out, errOut syncBuffer

	err = runCLIWith(ctx, &out, &errOut, args...)

	return out.String(), errOut.String(), err
}

func runCLIWith(ctx context.Context, out, errOut *syncBuffer, args ...string) error {
	root := newTestRoot()
	root.SetArgs(args)
	root.SetOut(out)
	root.SetErr(errOut)

	return root.ExecuteContext(ctx)
}

func TestCommandsAreWiredIntoRoot(t *testing.T) {
	t.Parallel()

	for _, path := range [][]string{
		{"get"}, {"apply-config"}, {"patch", "machineconfig"}, {"patch", "mc"}, {"version"}, {"config", "new"}, {"kubeconfig"},
	} {
		cmd, _, err := rootCmd.Find(path)
		require.NoError(t, err, "%v", path)
		assert.NotEmpty(t, cmd.Long, "%v has no help text", path)
		assert.NotEmpty(t, cmd.Example, "%v has no examples", path)
	}

	for _, flag := range []string{"endpoints", "nodes", "context", "talosconfig"} {
		assert.NotNil(t, rootCmd.PersistentFlags().Lookup(flag), flag)
	}
}

// startNode runs a test node API and writes a talosconfig for it with the given context nodes.
func startNode(t *testing.T, nodes ...string) (*clienttest.Server, string) {
	t.Helper()

	srv := clienttest.Start(t, clienttest.Options{KnownNodes: []string{"node1", "node2"}})
	path := filepath.Join(t.TempDir(), "talosconfig")
	require.NoError(t, srv.Config(nodes...).Save(path))

	return srv, path
}

func TestConnectErrors(t *testing.T) {
	t.Parallel()

	srv, _ := startNode(t)
	dir := t.TempDir()

	write := func(name string, edit func(c *clientconfig.Config)) string {
		cfg := srv.Config()
		edit(cfg)

		path := filepath.Join(dir, name)
		require.NoError(t, cfg.Save(path))

		return path
	}

	missing := filepath.Join(dir, "nope", "talosconfig")
	noCrt := write("nocrt", func(c *clientconfig.Config) { c.Contexts["test"].Crt = "" })
	noKey := write("nokey", func(c *clientconfig.Config) { c.Contexts["test"].Key = "" })
	noEndpoints := write("noendpoints", func(c *clientconfig.Config) { c.Contexts["test"].Endpoints = nil })
	badKey := write("badkey", func(c *clientconfig.Config) {
		c.Contexts["test"].Key = base64.StdEncoding.EncodeToString([]byte("junk"))
	})

	for _, tc := range []struct {
		name    string
		args    []string
		wantErr []string
	}{
		{
			name: "missing file", args: []string{"--talosconfig", missing, "version"},
			wantErr: []string{missing, "does not exist", "nodepkictl gen config", "nodepkictl cluster create"},
		},
		{name: "no crt", args: []string{"--talosconfig", noCrt, "version"}, wantErr: []string{`context "test" in ` + noCrt + " has no crt"}},
		{name: "no key", args: []string{"--talosconfig", noKey, "version"}, wantErr: []string{"has no key"}},
		{name: "no endpoints", args: []string{"--talosconfig", noEndpoints, "version"}, wantErr: []string{"has no endpoints", "--endpoints"}},
		{name: "bad key", args: []string{"--talosconfig", badKey, "version"}, wantErr: []string{"context key: not PEM"}},
		{name: "unknown context", args: []string{"--talosconfig", noCrt, "--context", "prod", "version"}, wantErr: []string{`context "prod" is not defined`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			_, _, err := runCLI(t.Context(), t, tc.args...)
			require.Error(t, err)

			for _, want := range tc.wantErr {
				assert.ErrorContains(t, err, want)
			}

			assert.NotContains(t, err.Error(), "PRIVATE KEY")
		})
	}
}

func TestEndpointsAndNodesFlagsOverrideTheContext(t *testing.T) {
	t.Parallel()

	srv, path := startNode(t, "node-that-does-not-exist")
	srv.Node.Set(func(n *clienttest.NodeService) { n.ServerVersion = "v1.0.0" })

	// The context's endpoint is dead; --endpoints points at the server, --nodes replaces the context nodes.
	cfg, err := clientconfig.Open(path)
	require.NoError(t, err)

	cfg.Contexts["test"].Endpoints = []string{"127.0.0.1:1"}
	require.NoError(t, cfg.Save(path))

	out, _, err := runCLI(t.Context(), t, "--talosconfig", path, "-e", srv.Addr, "-n", "node1", "-n", "node2", "version")
	require.NoError(t, err)
	assert.Contains(t, out, "NODE: node1")
	assert.Contains(t, out, "NODE: node2")
	assert.Equal(t, []string{"node1", "node2"}, srv.Nodes())
}
