package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/nodepki/nodepki/pkg/client"
)

func init() {
	addClientFlags(rootCmd.PersistentFlags())
}

// addClientFlags defines the connection overrides every node API command shares. Commands read
// them back from their own flag set (see clientOverrides), so a test can build a fresh tree.
func addClientFlags(flags *pflag.FlagSet) {
	flags.StringSliceP("endpoints", "e", nil,
		"node API endpoints to connect to (host, host:port or https://host:port; default port 50000), overriding the context's")
	flags.StringSliceP("nodes", "n", nil,
		"nodes to run the command on, addressed through the endpoints, overriding the context's")
	flags.String("context", "", "context of the talosconfig to use instead of its current one")
}

// clientOverrides are the values of the flags addClientFlags defines; a flag the command tree
// lacks counts as not given.
type clientOverrides struct {
	endpoints []string
	nodes     []string
}

func readClientOverrides(cmd *cobra.Command) clientOverrides {
	var o clientOverrides

	flags := cmd.Flags()
	// An absent flag means no override.
	o.endpoints, _ = flags.GetStringSlice("endpoints")
	o.nodes, _ = flags.GetStringSlice("nodes")

	return o
}

// target is one node a command runs on.
type target struct {
	// node goes into the `node` metadata; empty means the endpoint answers for itself.
	node string
	// label names the target in output (the NODE column, per-node errors).
	label string
}

// session is a connected client and the nodes the command addresses.
type session struct {
	client  *client.Client
	targets []target
	// endpoints are the endpoints of the context or --endpoints, all of them even when the
	// client talks to the first one only.
	endpoints []string
}

// connect loads the talosconfig, applies --context, --endpoints and --nodes, and dials the node
// API. Without nodes (neither --nodes nor context nodes) the command talks to the first endpoint
// itself, so that what it prints is labelled with the node that answered.
func connect(ctx context.Context, cmd *cobra.Command) (*session, error) {
	path, contextName, cctx, err := openContext(cmd)
	if err != nil {
		return nil, err
	}

	overrides := readClientOverrides(cmd)

	var missing []string

	for _, field := range []struct{ name, value string }{{"ca", cctx.CA}, {"crt", cctx.Crt}, {"key", cctx.Key}} {
		if field.value == "" {
			missing = append(missing, field.name)
		}
	}

	if len(missing) > 0 {
		return nil, fmt.Errorf("context %q in %s has no %s: the node API needs the CA and a client certificate and key; "+
			"get a complete client config from `nodepkictl gen config` or `nodepkictl config new`",
			contextName, path, strings.Join(missing, ", "))
	}

	endpoints := slices.Clone(cctx.Endpoints)
	if len(overrides.endpoints) > 0 {
		endpoints = slices.Clone(overrides.endpoints)
	}

	if len(endpoints) == 0 {
		return nil, fmt.Errorf("context %q in %s has no endpoints: pass --endpoints or set them with `nodepkictl config endpoint HOST...`",
			contextName, path)
	}

	nodes := cctx.Nodes
	if len(overrides.nodes) > 0 {
		nodes = overrides.nodes
	}

	allEndpoints := slices.Clone(endpoints)

	var targets []target

	for _, node := range nodes {
		node = strings.TrimSpace(node)
		if node == "" {
			return nil, errors.New("empty node name: give nodes as --nodes A,B or -n A -n B")
		}

		targets = append(targets, target{node: node, label: node})
	}

	if len(targets) == 0 {
		first, err := client.ParseEndpoint(endpoints[0])
		if err != nil {
			return nil, err
		}

		endpoints = endpoints[:1]
		targets = []target{{label: first.Host}}
	}

	c, err := client.New(ctx, client.ClientOptions{Context: cctx, Endpoints: endpoints})
	if err != nil {
		return nil, fmt.Errorf("context %q in %s: %w", contextName, path, err)
	}

	return &session{client: c, targets: targets, endpoints: allEndpoints}, nil
}

// Close closes the connection.
func (s *session) Close() {
	s.client.Close() // nothing to do about a failed close of a client connection
}

// onlyTarget is the node of a command that asks exactly one; what names the command in the error,
// so that `-n a,b` is refused before anything is asked.
func (s *session) onlyTarget(what string) (target, error) {
	if len(s.targets) != 1 {
		return target{}, fmt.Errorf("%s asks a single node, got %d nodes: pass one control-plane node with --nodes", what, len(s.targets))
	}

	return s.targets[0], nil
}

// forEachTarget calls fn for each target in turn with a context addressed to it; per-node errors
// are collected so one unreachable node does not hide the others' answers.
func (s *session) forEachTarget(ctx context.Context, fn func(ctx context.Context, t target) error) error {
	var failed nodeErrors

	for _, t := range s.targets {
		if err := fn(client.WithNode(ctx, t.node), t); err != nil {
			failed = append(failed, nodeError{node: t.label, err: err})
		}
	}

	if len(failed) == 0 {
		return nil
	}

	return failed
}

// nodeError is the failure of one node.
type nodeError struct {
	node string
	err  error
}

func (e nodeError) Error() string { return e.node + ": " + e.err.Error() }

func (e nodeError) Unwrap() error { return e.err }

// nodeErrors lists the nodes a command failed on, one line each.
type nodeErrors []nodeError

func (e nodeErrors) Error() string {
	if len(e) == 1 {
		return e[0].Error()
	}

	lines := make([]string, 0, len(e)+1)
	lines = append(lines, fmt.Sprintf("%d nodes failed:", len(e)))

	for _, ne := range e {
		lines = append(lines, "  "+ne.Error())
	}

	return strings.Join(lines, "\n")
}

func (e nodeErrors) Unwrap() []error {
	out := make([]error, 0, len(e))
	for _, ne := range e {
		out = append(out, ne)
	}

	return out
}

// readFileArg reads a file named by a flag, with an error that names the flag.
func readFileArg(flag, path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flag, err)
	}

	return data, nil
}
