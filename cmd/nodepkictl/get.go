package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/client"
)

func init() {
	rootCmd.AddCommand(newGetCmd())
}

type getOptions struct {
	output    string
	watch     bool
	namespace string
}

func newGetCmd() *cobra.Command {
	var opts getOptions

	cmd := &cobra.Command{
		Use:     "get TYPE [ID]",
		Aliases: []string{"g"},
		Short:   "Show node resources: certificates, their status, CA pools, the machine config",
		Long: `Show the resources a node serves through its COSI State API, as a table, YAML, JSON or JSONPath.

TYPE is any name the node registered for a resource type: the full type, its ID or one of its
aliases, in any case ("certificatestatus", "cs", "CertificateStatuses.pki.nodepki.dev").
"nodepkictl get rd" lists every type with its aliases. Without ID, every resource of the type
is shown; --namespace overrides the type's default namespace.

Each node in --nodes (or the context's nodes) is asked in turn through the endpoints; the NODE
column tells which node a row came from. A node that fails does not stop the others: its error
is printed after the output and the exit status is non-zero. Without any node the first endpoint
answers for itself.

Output formats (-o):
  table            columns NODE NAMESPACE TYPE ID VERSION and the type's own columns (default)
  yaml             one document per resource: node, metadata and spec, separated by ---
  json             one object per resource with the same keys
  jsonpath=EXPR    a JSONPath over the JSON form, e.g. jsonpath={.spec.notAfter}

With --watch the current resources are printed, then every change as it happens until Ctrl-C: in
table output the * column shows + (created), - (destroyed) or a blank (updated); yaml and json
outputs carry an "event" key. A dropped watch is re-established automatically.`,
		Example: `  # certificate status of every node in the context
  nodepkictl get certificatestatus

  # the API server certificate of one node, as YAML
  nodepkictl -n 10.5.0.2 get cs api -o yaml

  # when does each certificate expire?
  nodepkictl get cs -o jsonpath='{.spec.notAfter}'

  # every resource type the node serves, with aliases
  nodepkictl get rd

  # follow certificate renewals
  nodepkictl get cs --watch`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGet(cmd, args, opts)
		},
	}

	flags := cmd.Flags()
	flags.StringVarP(&opts.output, "output", "o", "table", "output format: "+outputFormats)
	flags.BoolVarP(&opts.watch, "watch", "w", false, "print the resources, then every change until interrupted")
	flags.StringVar(&opts.namespace, "namespace", "", "namespace to read (default: the type's default namespace)")

	return cmd
}

func runGet(cmd *cobra.Command, args []string, opts getOptions) error {
	printer, err := newResourcePrinter(opts.output, cmd.OutOrStdout(), opts.watch)
	if err != nil {
		return err
	}

	ctx := cmd.Context()

	if opts.watch {
		var stop context.CancelFunc

		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}

	s, err := connect(ctx, cmd)
	if err != nil {
		return err
	}

	defer s.Close()

	st := s.client.COSI()

	rd, namespace, err := resolveKind(ctx, st, s.targets, args[0], resource.Namespace(opts.namespace))
	if err != nil {
		return err
	}

	kind := resource.NewMetadata(namespace, rd.TypedSpec().Type, "", resource.VersionUndefined)

	var id resource.ID
	if len(args) == 2 {
		id = args[1]
	}

	if err = printer.WriteHeader(rd); err != nil {
		return err
	}

	if opts.watch {
		return watchResources(ctx, cmd.ErrOrStderr(), st, s.targets, printer, kind, id)
	}

	getErr := s.forEachTarget(ctx, func(ctx context.Context, t target) error {
		if id != "" {
			r, err := st.Get(ctx, resource.NewMetadata(kind.Namespace(), kind.Type(), id, resource.VersionUndefined),
				state.WithGetUnmarshalOptions(state.WithSkipProtobufUnmarshal()))
			if err != nil {
				return err
			}

			return printer.WriteResource(t.label, r, state.Created)
		}

		list, err := st.List(ctx, kind, state.WithListUnmarshalOptions(state.WithSkipProtobufUnmarshal()))
		if err != nil {
			return err
		}

		for _, r := range list.Items {
			if err = printer.WriteResource(t.label, r, state.Created); err != nil {
				return err
			}
		}

		return nil
	})

	return errors.Join(printer.Flush(), getErr)
}

// resolveKind asks the targets in turn which type word names, so that one unreachable node
// does not stop the command; an answer that the word is unknown or ambiguous is final.
func resolveKind(ctx context.Context, st state.State, targets []target, word string, namespace resource.Namespace) (*meta.ResourceDefinition, resource.Namespace, error) {
	var firstErr error

	for _, t := range targets {
		rd, ns, err := client.ResolveResourceKind(client.WithNode(ctx, t.node), st, word, namespace)

		var (
			unknown   *client.UnknownResourceError
			ambiguous *client.AmbiguousResourceError
		)

		switch {
		case err == nil:
			return rd, ns, nil
		case errors.As(err, &unknown):
			return nil, "", fmt.Errorf("%w: `nodepkictl get rd` lists the registered types and their aliases", err)
		case errors.As(err, &ambiguous):
			return nil, "", fmt.Errorf("%w: use the full type", err)
		case ctx.Err() != nil:
			return nil, "", err
		case firstErr == nil:
			firstErr = fmt.Errorf("%s: resolving resource type %q: %w", t.label, word, err)
		}
	}

	return nil, "", firstErr
}

// nodeEvent is a watch event, or a watch failure, from one node.
type nodeEvent struct {
	target target
	event  state.Event
	// notice is a failure to report on stderr; the watch goes on unless fatal is set.
	notice error
	fatal  bool
}

// watchRetryDelay is the pause before re-subscribing after a watch broke.
const watchRetryDelay = time.Second

// watchResources prints the current resources of every target, then their changes, until ctx
// is done. Each node has its own watch; all events go through this goroutine so output from
// different nodes never interleaves within a row.
func watchResources(ctx context.Context, stderr io.Writer, st state.State, targets []target, printer resourcePrinter, kind resource.Kind, id resource.ID) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	events := make(chan nodeEvent)

	for _, t := range targets {
		go watchTarget(ctx, st, t, kind, id, events)
	}

	bootstrapped := map[string]bool{}
	running := len(targets)

	var failed nodeErrors

	for running > 0 {
		var ev nodeEvent

		select {
		case <-ctx.Done():
			return errors.Join(printer.Flush(), failedOrNil(failed))
		case ev = <-events:
		}

		if ev.notice != nil {
			if err := printer.Flush(); err != nil {
				return err
			}

			if ev.fatal {
				running--

				failed = append(failed, nodeError{node: ev.target.label, err: ev.notice})
				fmt.Fprintf(stderr, "%s: %v\n", ev.target.label, ev.notice)

				continue
			}

			fmt.Fprintf(stderr, "%s: watch interrupted, re-subscribing: %v\n", ev.target.label, ev.notice)

			continue
		}

		switch ev.event.Type {
		case state.Bootstrapped:
			bootstrapped[ev.target.label] = true

			if err := printer.Flush(); err != nil {
				return err
			}

			continue
		case state.Created, state.Updated, state.Destroyed:
		default:
			continue
		}

		// A single-resource watch starts with a placeholder when the resource does not exist yet:
		// nothing to show but the header.
		if ev.event.Type == state.Destroyed && ev.event.Resource.Metadata().Version().Equal(resource.VersionUndefined) {
			if err := printer.Flush(); err != nil {
				return err
			}

			continue
		}

		if err := printer.WriteResource(ev.target.label, ev.event.Resource, ev.event.Type); err != nil {
			return err
		}

		// Kind watches replay the current resources first; flush them in one block, so the
		// table lines up, and every later change as it arrives.
		if id != "" || bootstrapped[ev.target.label] {
			if err := printer.Flush(); err != nil {
				return err
			}
		}
	}

	return errors.Join(printer.Flush(), failedOrNil(failed))
}

func failedOrNil(failed nodeErrors) error {
	if len(failed) == 0 {
		return nil
	}

	return failed
}

// watchTarget subscribes to one node and forwards its events until ctx is done. A subscription
// the node refuses is fatal for that node, and so is a watch the node ends for the caller's
// credential (revoked, no longer trusted, expired): subscribing again would only be refused. A
// watch that breaks otherwise is re-established (the current resources are then replayed as
// created).
func watchTarget(ctx context.Context, st state.State, t target, kind resource.Kind, id resource.ID, events chan<- nodeEvent) {
	send := func(ev nodeEvent) bool {
		ev.target = t

		select {
		case events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}

	for first := true; ; first = false {
		subscribed, err := watchOnce(ctx, st, t, kind, id, send)

		if ctx.Err() != nil {
			return
		}

		if (first && !subscribed) || status.Code(err) == codes.Unauthenticated {
			send(nodeEvent{notice: err, fatal: true})

			return
		}

		if !send(nodeEvent{notice: err}) {
			return
		}

		select {
		case <-ctx.Done():
			return
		case <-time.After(watchRetryDelay):
		}
	}
}

// watchOnce runs one subscription until it fails or ctx is done; subscribed tells whether the
// node accepted the subscription.
func watchOnce(ctx context.Context, st state.State, t target, kind resource.Kind, id resource.ID, send func(nodeEvent) bool) (subscribed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	ch := make(chan state.Event)
	nodeCtx := client.WithNode(ctx, t.node)

	if id != "" {
		err = st.Watch(nodeCtx, resource.NewMetadata(kind.Namespace(), kind.Type(), id, resource.VersionUndefined), ch,
			state.WithWatchUnmarshalOptions(state.WithSkipProtobufUnmarshal()))
	} else {
		err = st.WatchKind(nodeCtx, kind, ch, state.WithBootstrapContents(true),
			state.WithWatchKindUnmarshalOptions(state.WithSkipProtobufUnmarshal()))
	}

	if err != nil {
		return false, err
	}

	for {
		var ev state.Event

		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case ev = <-ch:
		}

		if ev.Type == state.Errored {
			return true, ev.Error
		}

		if !send(nodeEvent{event: ev}) {
			return true, ctx.Err()
		}
	}
}
