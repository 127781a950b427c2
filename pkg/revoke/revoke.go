// Package revoke owns `nodepkictl revoke`: it adds one entry to machine.revokedCertificates on
// every node of the cluster (or prunes expired ones), checks that each node enforces it, and
// reports per node, so that a run some node missed can simply be repeated.
package revoke

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/pkg/rotate"
)

// DefaultVerifyTimeout is how long a node gets to enforce a changed list.
const DefaultVerifyTimeout = 10 * time.Second

// verifyInterval paces the checks of a node's enforced list.
const verifyInterval = 200 * time.Millisecond

// Cluster is how revoke reaches the nodes; rotate.NodeAPI implements it.
type Cluster interface {
	rotate.Cluster
	// Revocations reads the list a node enforces.
	Revocations(ctx context.Context, node string) ([]revocation.Entry, error)
}

// Target is what to revoke: an entry, completed from the certificate when one is given.
type Target struct {
	// Entry holds the fingerprint, or serial and issuer, given on the command line, and the reason.
	Entry revocation.Entry
	// Certificate is the revoked certificate (PEM) when known: the entry then gets its key's
	// fingerprint, its serial and issuer (looked up among the accepted OS CAs) and its notAfter.
	Certificate []byte
	// Credentials are the revoked credentials with their key when known (a talosconfig): each
	// node is probed with them and must refuse them.
	Credentials *rotate.Credentials
}

// Options configure Run.
type Options struct {
	// Target is nil with Prune alone.
	Target *Target
	// Own are the credentials revoke connects with.
	Own rotate.Credentials
	// Endpoints are the node API endpoints; Nodes the nodes, discovered when empty (falling back
	// to FallbackNodes when no endpoint knows any member).
	Endpoints, Nodes, FallbackNodes []string
	// Force allows revoking the credentials revoke connects with.
	Force bool
	// Prune drops entries whose notAfter has passed.
	Prune bool
	// Port is the node API port the direct probes dial.
	Port          int
	VerifyTimeout time.Duration
	Out           io.Writer
	Now           func() time.Time
}

// Run applies the revocation to every node and prints a per-node report and the patch for
// `gen config --config-patch`. It returns an error naming the nodes that failed.
func Run(ctx context.Context, cl Cluster, opts Options) error {
	if opts.Now == nil {
		opts.Now = time.Now
	}

	if opts.VerifyTimeout == 0 {
		opts.VerifyTimeout = DefaultVerifyTimeout
	}

	if err := cl.UseCredentials(ctx, []rotate.Credentials{opts.Own}); err != nil {
		return err
	}

	nodes, err := resolveNodes(ctx, cl, opts)
	if err != nil {
		return err
	}

	var entry *revocation.Entry

	if opts.Target != nil {
		e, err := completeEntry(ctx, cl, nodes[0], opts.Target)
		if err != nil {
			return err
		}

		if err = checkOwn(ctx, cl, nodes[0], e, opts); err != nil {
			return err
		}

		entry = &e
	}

	// The nodes the endpoints name go last: when revoking one's own credentials (--force), the
	// endpoint refuses every call once it has the entry.
	slices.SortStableFunc(nodes, func(a, b string) int {
		return boolInt(isEndpoint(a, opts.Endpoints)) - boolInt(isEndpoint(b, opts.Endpoints))
	})

	var (
		failed []string
		final  []revocation.Entry
	)

	for _, node := range nodes {
		list, err := applyTo(ctx, cl, node, entry, opts)
		if err != nil {
			fmt.Fprintf(opts.Out, "  %s: FAILED: %v\n", node, err)

			failed = append(failed, node)

			continue
		}

		if final == nil {
			final = list
		}
	}

	if entry != nil {
		final = mergeEntry(final, *entry)
	}

	if patch, err := genConfigPatch(final); err == nil {
		fmt.Fprintf(opts.Out, "\nNodes made later carry the list with `nodepkictl gen config --config-patch @revocations.yaml`, revocations.yaml being:\n%s", patch)
	}

	if len(failed) > 0 {
		return fmt.Errorf("%d of %d nodes did not take the change: %s; rerun the same command once they are reachable (nodes that have it are left as they are)",
			len(failed), len(nodes), strings.Join(failed, ", "))
	}

	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}

	return 0
}

func isEndpoint(node string, endpoints []string) bool {
	for _, e := range endpoints {
		host := e
		if h, _, err := net.SplitHostPort(strings.TrimPrefix(e, "https://")); err == nil {
			host = h
		}

		if strings.Trim(host, "[]") == node {
			return true
		}
	}

	return false
}

func resolveNodes(ctx context.Context, cl Cluster, opts Options) ([]string, error) {
	if len(opts.Nodes) > 0 {
		return slices.Clone(opts.Nodes), nil
	}

	members, err := rotate.DiscoverMembers(ctx, cl, opts.Endpoints, nil)
	if err != nil {
		return nil, err
	}

	var nodes []string

	for _, m := range members {
		if m.Stale(opts.Now(), rotate.DefaultMemberStaleAfter) {
			fmt.Fprintf(opts.Out, "  %s: stale member, left out; pass -n to include it\n", m.Address)

			continue
		}

		nodes = append(nodes, m.Address)
	}

	if len(nodes) == 0 {
		if len(opts.FallbackNodes) == 0 {
			return nil, errors.New("no nodes: none discovered through the endpoints and the context has none: list every node of the cluster with --nodes")
		}

		nodes = slices.Clone(opts.FallbackNodes)
	}

	fmt.Fprintf(opts.Out, "nodes: %s\n", strings.Join(nodes, ", "))

	return nodes, nil
}

// osCAs are the accepted OS CAs of a node.
func osCAs(ctx context.Context, cl Cluster, node string) ([]*x509.Certificate, error) {
	accepted, err := cl.AcceptedCAs(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("reading the accepted OS CAs of %s: %w", node, err)
	}

	var out []*x509.Certificate

	for _, p := range accepted[rotate.RootOS].Certificates {
		parsed, err := certs.ParseCertificates([]byte(p))
		if err != nil {
			continue
		}

		out = append(out, parsed...)
	}

	return out, nil
}

func issuerOf(crt *x509.Certificate, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if crt.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}

	return nil
}

// completeEntry fills the entry from the certificate and checks an issuer given alone.
func completeEntry(ctx context.Context, cl Cluster, node string, t *Target) (revocation.Entry, error) {
	cas, err := osCAs(ctx, cl, node)
	if err != nil {
		return revocation.Entry{}, err
	}

	if t.Certificate != nil {
		crt, err := certs.ParseCertificate(t.Certificate)
		if err != nil {
			return revocation.Entry{}, fmt.Errorf("the certificate to revoke: %w", err)
		}

		if crt.IsCA {
			return revocation.Entry{}, fmt.Errorf("the certificate to revoke (subject %q) is a CA: to stop trusting a CA, rotate it with rotate-ca", crt.Subject)
		}

		return revocation.ForCertificate(crt, issuerOf(crt, cas), t.Entry.Reason), nil
	}

	e := t.Entry

	if err := e.Check(); err != nil {
		return e, err
	}

	if e.Issuer != "" && !slices.ContainsFunc(cas, func(ca *x509.Certificate) bool {
		return certs.Fingerprint(ca) == revocation.NormalizeFingerprint(e.Issuer)
	}) {
		return e, fmt.Errorf("--issuer %s is not the fingerprint of an OS CA node %s accepts (see `nodepkictl get acceptedcas os`)", e.Issuer, node)
	}

	return e, nil
}

// checkOwn refuses to revoke the credentials revoke connects with, unless forced.
func checkOwn(ctx context.Context, cl Cluster, node string, e revocation.Entry, opts Options) error {
	own, err := certs.ParseCertificate(opts.Own.Crt)
	if err != nil {
		return fmt.Errorf("the connected client certificate: %w", err)
	}

	cas, err := osCAs(ctx, cl, node)
	if err != nil {
		return err
	}

	chain := []*x509.Certificate{own}
	if issuer := issuerOf(own, cas); issuer != nil {
		chain = append(chain, issuer)
	}

	if _, denied := revocation.NewList([]revocation.Entry{e}).Denied(chain); !denied {
		return nil
	}

	if !opts.Force {
		return errors.New("this would revoke the credentials you are connected with (the talosconfig's current context): " +
			"use another admin context, or pass --force to lock yourself out")
	}

	fmt.Fprintln(opts.Out, "revoking the credentials this command is connected with (--force): the nodes the endpoints name go last")

	return nil
}

// applyTo brings one node's list to its target and verifies that the node enforces it. It
// returns the node's list.
func applyTo(ctx context.Context, cl Cluster, node string, entry *revocation.Entry, opts Options) ([]revocation.Entry, error) {
	raw, err := cl.MachineConfig(ctx, node)
	if err != nil {
		return nil, fmt.Errorf("reading the machine config: %w", err)
	}

	cfg, err := machineconfig.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing the machine config: %w", err)
	}

	var current []revocation.Entry
	if m := cfg.Document().Machine; m != nil {
		current = m.RevokedCertificates
	}

	want := slices.Clone(current)
	if entry != nil {
		want = mergeEntry(want, *entry)
	}

	var pruned int

	if opts.Prune {
		before := len(want)
		want = slices.DeleteFunc(want, func(e revocation.Entry) bool { return e.Expired(opts.Now()) })
		pruned = before - len(want)
	}

	action := "already revoked"
	if entry == nil {
		action = "nothing to prune"
	}

	if !slices.Equal(want, current) {
		patch, err := jsonPatch(want)
		if err != nil {
			return nil, err
		}

		if err = cl.ApplyPatches(ctx, node, [][]byte{patch}); err != nil {
			if isSelfLockout(err, entry, opts) {
				fmt.Fprintf(opts.Out, "  %s: revoked (this command's own credentials are now refused)\n", node)

				return want, nil
			}

			return nil, fmt.Errorf("applying machine.revokedCertificates: %w", err)
		}

		action = "revoked"
		if entry == nil {
			action = fmt.Sprintf("%d expired entries pruned", pruned)
		} else if pruned > 0 {
			action += fmt.Sprintf(", %d expired entries pruned", pruned)
		}
	}

	if err = verify(ctx, cl, node, want, entry, opts); err != nil {
		return nil, err
	}

	fmt.Fprintf(opts.Out, "  %s: %s, enforced\n", node, action)

	return want, nil
}

// isSelfLockout: with --force, the node may refuse the apply's reply once the entry denies the
// connected credentials; the verification tells whether it took the change.
func isSelfLockout(err error, entry *revocation.Entry, opts Options) bool {
	return entry != nil && opts.Force && status.Code(err) == codes.Unauthenticated && strings.Contains(err.Error(), "revoked")
}

// verify waits until the node enforces want, and, when the revoked credentials are known, until
// a new connection with them is refused as revoked.
func verify(ctx context.Context, cl Cluster, node string, want []revocation.Entry, entry *revocation.Entry, opts Options) error {
	ctx, cancel := context.WithTimeout(ctx, opts.VerifyTimeout)
	defer cancel()

	var last error

	for {
		last = verifyOnce(ctx, cl, node, want, entry, opts)
		if last == nil {
			return nil
		}

		select {
		case <-ctx.Done():
			return fmt.Errorf("not enforced after %s: %w", opts.VerifyTimeout, last)
		case <-time.After(verifyInterval):
		}
	}
}

func verifyOnce(ctx context.Context, cl Cluster, node string, want []revocation.Entry, entry *revocation.Entry, opts Options) error {
	if entry != nil && opts.Target.Credentials != nil {
		err := cl.Probe(ctx, node, *opts.Target.Credentials, true)
		if err == nil {
			return errors.New("the node still accepts the revoked credentials")
		}

		if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "revoked") {
			return fmt.Errorf("probing with the revoked credentials: %w", err)
		}
	}

	enforced, err := cl.Revocations(ctx, node)
	if err != nil {
		if entry != nil && opts.Force && status.Code(err) == codes.Unauthenticated && strings.Contains(err.Error(), "revoked") {
			return nil // the node refuses the connected credentials: it enforces the entry
		}

		return fmt.Errorf("reading the revocations the node enforces: %w", err)
	}

	for _, w := range want {
		if !slices.ContainsFunc(enforced, func(e revocation.Entry) bool { return revocation.Same(e, w) }) {
			return errors.New("the node does not enforce the entry yet")
		}
	}

	return nil
}

// mergeEntry adds e to list unless an entry for the same credential is there.
func mergeEntry(list []revocation.Entry, e revocation.Entry) []revocation.Entry {
	if slices.ContainsFunc(list, func(x revocation.Entry) bool { return revocation.Same(x, e) }) {
		return list
	}

	return append(slices.Clone(list), e)
}

// jsonPatch replaces the whole list: a strategic merge patch would append to it, and pruning
// removes entries.
func jsonPatch(list []revocation.Entry) ([]byte, error) {
	if list == nil {
		list = []revocation.Entry{}
	}

	return json.Marshal([]map[string]any{{"op": "add", "path": "/machine/revokedCertificates", "value": list}})
}

// genConfigPatch is the strategic merge patch of the list for `gen config --config-patch`.
func genConfigPatch(list []revocation.Entry) ([]byte, error) {
	return yaml.Marshal(map[string]any{"machine": map[string]any{"revokedCertificates": list}})
}
