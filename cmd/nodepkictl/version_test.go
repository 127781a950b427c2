package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/client/clienttest"
	"github.com/nodepki/nodepki/pkg/version"
)

func TestVersion(t *testing.T) {
	t.Parallel()

	srv, path := startNode(t, "node1", "node2")
	srv.Node.Set(func(n *clienttest.NodeService) { n.ServerVersion = "v1.2.3" })

	out, _, err := runCLI(t.Context(), t, "--talosconfig", path, "version")
	require.NoError(t, err)
	assert.Equal(t, "Client:\n\tVersion: "+version.Version+"\n"+
		"Server:\n\tNODE: node1\n\tVersion: v1.2.3\n\tMachine type: controlplane\n"+
		"Server:\n\tNODE: node2\n\tVersion: v1.2.3\n\tMachine type: controlplane\n", out)

	// Without nodes the endpoint answers for itself, and says who it is.
	_, noNodes := startNode(t)

	out, _, err = runCLI(t.Context(), t, "--talosconfig", noNodes, "version")
	require.NoError(t, err)
	assert.Contains(t, out, "NODE: 127.0.0.1\n")
	assert.Contains(t, out, "\tAnswered by: "+clienttest.SelfNode+"\n")

	// --client dials nothing: it works without any client config.
	out, _, err = runCLI(t.Context(), t, "--talosconfig", filepath.Join(t.TempDir(), "none"), "version", "--client")
	require.NoError(t, err)
	assert.Equal(t, "Client:\n\tVersion: "+version.Version+"\n", out)
}
