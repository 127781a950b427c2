package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/client"
)

type auditOptions struct {
	since  time.Duration
	follow bool
	output string
}

func init() {
	rootCmd.AddCommand(newAuditCmd())
}

func newAuditCmd() *cobra.Command {
	var opts auditOptions

	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Read the audit log of nodes",
		Long: `Read the audit log of each node (-n; without it, the first endpoint's): the security events it
recorded in <state-dir>/audit.log and its rotated files, oldest first. Each event is a config
applied or patched, a client configuration, renewal or kubeconfig issued, a certificate signed by
trustd, refused calls (per peer and minute), revocation entries added or removed, or a root change
(a rotate-ca step as the node sees it). Events name the caller and what was issued, never a key,
a token or a PEM. See docs/audit.md for every field.

--since keeps the events of the last DURATION (1h, 30m); -f (--follow) keeps reading and prints
each new event as it is written, from every node at once, until interrupted. -o json prints the
events as stored, one JSON object a line. A stored line that is not an event (the last line of a
node killed while writing it) is skipped with a warning on stderr.

Needs os:admin; other roles are refused.`,
		Example: `  nodepkictl -n 127.0.0.2 audit --since 1h
  nodepkictl -n 127.0.0.2,127.0.0.3 audit -f
  nodepkictl -n 127.0.0.2 audit -o json | jq 'select(.type == "config.patched")'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAudit(cmd, opts)
		},
	}

	flags := cmd.Flags()
	flags.DurationVar(&opts.since, "since", 0, "only events of the last DURATION (e.g. 1h, 30m); default: all")
	flags.BoolVarP(&opts.follow, "follow", "f", false, "keep printing new events as they are written")
	flags.StringVarP(&opts.output, "output", "o", "text", "output format: text (one readable line an event) or json (the lines as stored)")

	return cmd
}

func runAudit(cmd *cobra.Command, opts auditOptions) error {
	if opts.output != "text" && opts.output != "json" {
		return fmt.Errorf("--output %q is not a format: use text or json", opts.output)
	}

	if opts.since < 0 {
		return fmt.Errorf("--since %s is negative: give the age of the oldest event to show, e.g. 1h", opts.since)
	}

	ctx := cmd.Context()

	s, err := connect(ctx, cmd)
	if err != nil {
		return err
	}

	defer s.Close()

	req := &nodeapi.AuditRequest{SinceSeconds: int64((opts.since + time.Second - 1) / time.Second), Follow: opts.follow}
	out := &auditPrinter{stdout: cmd.OutOrStdout(), stderr: cmd.ErrOrStderr(), json: opts.output == "json"}

	read := func(ctx context.Context, t target) error {
		stream, err := s.client.Node().Audit(ctx, req)
		if err != nil {
			return err
		}

		for {
			line, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}

			if err != nil {
				return err
			}

			out.print(t.label, line)
		}
	}

	if !opts.follow {
		return s.forEachTarget(ctx, read)
	}

	// Followed streams never end by themselves: one per node, all at once.
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed nodeErrors
	)

	for _, t := range s.targets {
		wg.Go(func() {
			if err := read(client.WithNode(ctx, t.node), t); err != nil && ctx.Err() == nil {
				mu.Lock()
				failed = append(failed, nodeError{node: t.label, err: err})
				mu.Unlock()
			}
		})
	}

	wg.Wait()

	if len(failed) > 0 {
		return failed
	}

	return nil
}

// auditPrinter writes events from several streams, one whole line at a time.
type auditPrinter struct {
	stdout, stderr io.Writer
	json           bool

	mu sync.Mutex
}

func (p *auditPrinter) print(node string, line *nodeapi.AuditLine) {
	p.mu.Lock()
	defer p.mu.Unlock()

	if w := line.GetWarning(); w != "" {
		fmt.Fprintf(p.stderr, "warning: %s: %s\n", node, w)

		return
	}

	if p.json {
		fmt.Fprintf(p.stdout, "%s\n", line.GetLine())

		return
	}

	e, err := audit.ParseLine(line.GetLine())
	if err != nil {
		fmt.Fprintf(p.stderr, "warning: %s: a line the node sent is not an event: %v\n", node, err)

		return
	}

	if e.Node != "" {
		node = e.Node
	}

	fmt.Fprintf(p.stdout, "%s  %-15s  %-18s  %s\n", e.Time.UTC().Format(time.RFC3339), node, e.Type, describeEvent(e))
}

// describeEvent is the readable part of an event's line: who, then what.
func describeEvent(e audit.Event) string {
	var parts []string

	add := func(key string, value string) {
		if value != "" {
			parts = append(parts, key+"="+quoteIfSpaced(value))
		}
	}

	if c := e.Caller; c != nil {
		add("caller", c.Subject)
		add("roles", strings.Join(c.Roles, ","))
		add("serial", c.Serial)
		add("from", c.Address)
		add("via", c.ForwardedBy)
	}

	if len(e.Changed) > 0 {
		add("changed", strings.Join(e.Changed, ","))
	}

	if c := e.Certificate; c != nil {
		add("requester", c.Requester)
		add("subject", c.Subject)

		if c.Subject == "" {
			add("cn", c.CommonName)
		}

		add("sans", strings.Join(append(append([]string(nil), c.DNSNames...), c.IPAddresses...), ","))
		add("issued-serial", c.Serial)
		add("lifetime", c.Lifetime)

		if !c.NotAfter.IsZero() {
			add("not-after", c.NotAfter.UTC().Format(time.RFC3339))
		}
	}

	for _, r := range e.Revocations {
		entry := r.Fingerprint
		if r.Serial != "" {
			entry = strings.TrimPrefix(entry+",serial:"+r.Serial, ",")
		}

		add("entry", entry)
		add("reason", r.Reason)
	}

	for _, r := range e.Roots {
		change := r.Root + ":" + r.Step
		switch {
		case r.To != "":
			change += ":" + abbreviate(r.From) + "->" + abbreviate(r.To)
		case len(r.Fingerprints) > 0:
			short := make([]string, 0, len(r.Fingerprints))
			for _, fp := range r.Fingerprints {
				short = append(short, abbreviate(fp))
			}

			change += ":" + strings.Join(short, ",")
		case r.Count > 0:
			change += fmt.Sprintf(":%d", r.Count)
		}

		add("root", change)
	}

	if r := e.Refusal; r != nil {
		add("service", r.Service)
		add("peer", r.Peer)
		add("count", fmt.Sprint(r.Count))
		add("method", r.Method)
		add("reason", r.Reason)
	}

	return strings.Join(parts, " ")
}

// abbreviate shortens a fingerprint for the text output (-o json has it whole).
func abbreviate(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}

	if fp == "" {
		return "none"
	}

	return fp
}

func quoteIfSpaced(s string) string {
	if strings.ContainsAny(s, " \t\"") {
		return fmt.Sprintf("%q", s)
	}

	return s
}
