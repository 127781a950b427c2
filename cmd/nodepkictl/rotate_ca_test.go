package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/rotate"
)

func newRotateCATestRoot() *cobra.Command {
	root := &cobra.Command{Use: "nodepkictl", SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().String("talosconfig", "", "")
	addClientFlags(root.PersistentFlags())
	root.AddCommand(newRotateCACmd())

	return root
}

func TestRotateCARefusesBadInvocations(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()

	withNodes := filepath.Join(dir, "with-nodes")
	cfg := clientconfig.New("prod", []string{"10.5.0.2"}, []byte("ca"), []byte("crt"), []byte("key"))
	cfg.Contexts["prod"].Nodes = []string{"10.5.0.2"}
	require.NoError(t, cfg.Save(withNodes))

	withoutEndpoints := filepath.Join(dir, "without-endpoints")
	require.NoError(t, clientconfig.New("prod", nil, []byte("ca"), []byte("crt"), []byte("key")).Save(withoutEndpoints))

	notKubeconfig := filepath.Join(dir, "not-a-kubeconfig")
	require.NoError(t, os.WriteFile(notKubeconfig, []byte("clusters: [unclosed"), 0o600))

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"--kubeconfig without --kubernetes", []string{"--talosconfig", withNodes, "rotate-ca", "--etcd", "--kubeconfig", notKubeconfig}, "add --kubernetes, or drop --kubeconfig"},
		{"--kubeconfig not a kubeconfig", []string{"--talosconfig", withNodes, "rotate-ca", "--kubernetes", "--kubeconfig", notKubeconfig}, "is not a kubeconfig rotate-ca can keep in step"},
		{"every root flag false", []string{"--talosconfig", withNodes, "rotate-ca", "--os=false", "--kubernetes=false"}, "every root flag is false"},
		{"missing talosconfig", []string{"--talosconfig", filepath.Join(dir, "nope"), "rotate-ca"}, "does not exist"},
		{"no endpoints", []string{"--talosconfig", withoutEndpoints, "-n", "10.5.0.2", "rotate-ca"}, "has no endpoints"},
		{"unknown context", []string{"--talosconfig", withNodes, "--context", "staging", "rotate-ca"}, `context "staging" is not defined`},
		{"arguments", []string{"--talosconfig", withNodes, "rotate-ca", "os"}, "unknown command"},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			root := newRotateCATestRoot()
			root.SetArgs(tc.args)

			var out syncBuffer

			root.SetOut(&out)
			root.SetErr(&out)

			err := root.ExecuteContext(t.Context())
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestRotateCAFlags(t *testing.T) {
	t.Parallel()

	cmd := newRotateCACmd()

	assert.Equal(t, "true", cmd.Flags().Lookup("dry-run").DefValue, "--dry-run is the default, as in Talos")
	assert.Equal(t, "o", cmd.Flags().Lookup("output").Shorthand)

	for _, root := range rotate.AllRoots {
		assert.NotNil(t, cmd.Flags().Lookup(string(root)), "no flag for root %s", root)
	}

	for _, flag := range []string{"plan", "with-secrets", "force", "max-clock-skew", "wait-timeout", "client-grace"} {
		assert.NotNil(t, cmd.Flags().Lookup(flag), flag)
	}

	assert.Contains(t, cmd.Long, "discovered through the control plane", "--help tells where the nodes come from without --nodes")

	found, _, err := rootCmd.Find([]string{"rotate-ca"})
	require.NoError(t, err)
	assert.Equal(t, "rotate-ca", found.Name())
	assert.NotEmpty(t, found.Example)
}

// TestRotateCAInterrupted: a rotation stopped by Ctrl-C says so and how to resume, instead of
// "context canceled".
func TestRotateCAInterrupted(t *testing.T) {
	t.Parallel()

	_, talosconfig := startNode(t, "node1")

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"real run", []string{"--dry-run=false"}, "rotate-ca interrupted: nothing is lost; rerun the same command to resume"},
		{"dry run", nil, "rotate-ca interrupted (dry run: nothing was changed)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			ctx, cancel := context.WithCancel(t.Context())
			cancel()

			root := newRotateCATestRoot()
			root.SetArgs(append([]string{"--talosconfig", talosconfig, "rotate-ca", "--os"}, tc.args...))

			var out syncBuffer

			root.SetOut(&out)
			root.SetErr(&out)

			err := root.ExecuteContext(ctx)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), "context canceled")
		})
	}
}

func TestRotateCASelectsRoots(t *testing.T) {
	t.Parallel()

	tests := []struct {
		args []string
		want []rotate.Root
	}{
		{nil, rotate.DefaultRoots},
		{[]string{"--join-token"}, []rotate.Root{rotate.RootJoinToken}},
		{[]string{"--join-token", "--os"}, []rotate.Root{rotate.RootOS, rotate.RootJoinToken}},
		{[]string{"--etcd", "--join-token=false"}, []rotate.Root{rotate.RootEtcd}},
	}

	for _, tc := range tests {
		cmd := newRotateCACmd()
		require.NoError(t, cmd.ParseFlags(tc.args))

		chosen := make([]bool, len(rootFlags))
		for i, rf := range rootFlags {
			chosen[i], _ = cmd.Flags().GetBool(string(rf.root))
		}

		got, err := selectRoots(cmd, chosen)
		require.NoError(t, err, tc.args)
		assert.Equal(t, tc.want, got, "%v", tc.args)
	}

	cmd := newRotateCACmd()
	require.NoError(t, cmd.ParseFlags([]string{"--join-token=false"}))

	_, err := selectRoots(cmd, make([]bool, len(rootFlags)))
	require.ErrorContains(t, err, "every root flag is false")
}
