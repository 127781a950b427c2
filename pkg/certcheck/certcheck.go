// Package certcheck owns `nodepkictl certs check`: it gathers every leaf certificate and every
// accepted CA of the nodes of a cluster, and the client's own certificates, and judges each
// against a warning window. Exit codes follow from the report (ExitCode).
package certcheck

import (
	"cmp"
	"context"
	"crypto/x509"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/rotate"
	"github.com/nodepki/nodepki/resources/pki"
)

// Exit codes of `certs check`; the highest that applies wins.
const (
	ExitOK          = 0
	ExitProblem     = 1 // something expires within the window, is untrusted, expired or not issued
	ExitUnreachable = 2 // a node could not be asked
	ExitUsage       = 3 // bad flags or client configuration
)

// Kinds of Item.
const (
	KindLeaf   = "leaf"
	KindCA     = "ca"
	KindClient = "client"
)

// States of Item. StateOK and StateRenewing are fine; every other state is a problem.
const (
	StateOK        = "ok"
	StateRenewing  = "renewing"
	StateExpiring  = "expiring"
	StateExpired   = "expired"
	StateUntrusted = "untrusted"
	StatePending   = "pending"
)

// DefaultWarn is how far ahead `certs check` looks by default.
const DefaultWarn = 30 * 24 * time.Hour

// Item is one certificate of the report.
type Item struct {
	// Nodes hold the certificate: one node for a leaf, every node that accepts a CA, none for
	// the client's own certificates.
	Nodes []string `json:"nodes,omitempty"`
	Kind  string   `json:"kind"`
	Root  string   `json:"root"`
	// Name is the certificate ID of a leaf, the subject of a CA, the source of a client certificate.
	Name     string    `json:"name"`
	NotAfter time.Time `json:"notAfter"`
	// DaysLeft is whole days until NotAfter, negative once expired.
	DaysLeft int    `json:"daysLeft"`
	Trusted  bool   `json:"trusted"`
	State    string `json:"state"`
	// Detail says why the state is what it is, or which CA of the root issues.
	Detail string `json:"detail,omitempty"`
}

// Problem reports whether the item makes the check fail.
func (i Item) Problem() bool {
	return i.State != StateOK && i.State != StateRenewing
}

// Unreachable is a node that could not be asked.
type Unreachable struct {
	Node  string `json:"node"`
	Error string `json:"error"`
}

// Report is the outcome of a check.
type Report struct {
	Items       []Item        `json:"items"`
	Unreachable []Unreachable `json:"unreachable,omitempty"`
	// Notes are remarks that do not change the outcome (stale members left out, no kubeconfig).
	Notes []string `json:"notes,omitempty"`
	// Warn is the window, in seconds for JSON readers.
	WarnSeconds int64 `json:"warnSeconds"`
	ExitCode    int   `json:"exitCode"`
}

// Cluster is how the check reaches the nodes; rotate.NodeAPI implements it.
type Cluster interface {
	rotate.MemberLister
	AcceptedCAs(ctx context.Context, node string) (map[rotate.Root]pki.AcceptedCASpec, error)
	CertificateStatuses(ctx context.Context, node string) (map[string]pki.CertificateStatusSpec, error)
}

// ClientCertificate is a certificate the client itself presents (talosconfig, kubeconfig).
type ClientCertificate struct {
	// Source names it: `talosconfig <path> context "<name>"`.
	Source string
	// Root is the root whose accepted CAs must verify it (os, kubernetes).
	Root string
	Crt  *x509.Certificate
	// ClusterCAs, when set, are the CAs the certificate's configuration trusts for the server
	// (a kubeconfig's cluster): it is checked only when one of them is accepted for Root, that
	// is, when it belongs to this cluster.
	ClusterCAs []*x509.Certificate
}

// Options of Check.
type Options struct {
	// Endpoints are the node API endpoints; discovery asks each.
	Endpoints []string
	// Nodes, when set, are the nodes to check instead of the discovered ones.
	Nodes []string
	// FallbackNodes are checked when discovery finds none (nodes of an older version).
	FallbackNodes []string
	// Warn is the window: anything that expires within it is a problem (default DefaultWarn).
	Warn time.Duration
	// Now is the time the check judges at.
	Now time.Time
	// Concurrency bounds the nodes asked at once (default 16).
	Concurrency int
	// MemberStaleAfter is rotate's: older members are left out (default rotate.DefaultMemberStaleAfter).
	MemberStaleAfter time.Duration
	// Clients are the client's own certificates.
	Clients []ClientCertificate
}

// Check asks every node and judges what they hold. It fails only when it cannot tell which nodes
// there are; nodes that cannot be asked are in Report.Unreachable.
func Check(ctx context.Context, cl Cluster, opts Options) (*Report, error) {
	opts.Warn = cmp.Or(opts.Warn, DefaultWarn)
	opts.Concurrency = cmp.Or(opts.Concurrency, 16)
	opts.MemberStaleAfter = cmp.Or(opts.MemberStaleAfter, rotate.DefaultMemberStaleAfter)

	report := &Report{WarnSeconds: int64(opts.Warn / time.Second)}

	nodes, err := resolveNodes(ctx, cl, opts, report)
	if err != nil {
		return nil, err
	}

	results := askNodes(ctx, cl, nodes, opts.Concurrency)

	cas := map[string]*Item{}
	accepted := map[string][]*x509.Certificate{}

	for i, res := range results {
		node := nodes[i]

		if res.err != nil {
			report.Unreachable = append(report.Unreachable, Unreachable{Node: node, Error: res.err.Error()})

			continue
		}

		for _, id := range slices.Sorted(maps.Keys(res.statuses)) {
			report.Items = append(report.Items, judgeLeaf(node, id, res.statuses[id], opts))
		}

		for _, root := range slices.Sorted(maps.Keys(res.cas)) {
			parsed, bad := collectCAs(res.cas[root])

			for _, err := range bad {
				report.Items = append(report.Items, Item{
					Nodes: []string{node}, Kind: KindCA, Root: string(root), Name: "unreadable CA",
					State: StateUntrusted, Detail: err.Error(),
				})
			}

			for _, crt := range parsed {
				key := fmt.Sprintf("%s/%s/%d", root, certs.Fingerprint(crt.cert), crt.cert.NotAfter.Unix())

				item, seen := cas[key]
				if !seen {
					judged := judgeCA(string(root), crt, opts)
					item = &judged
					cas[key] = item
					accepted[string(root)] = append(accepted[string(root)], crt.cert)
				}

				item.Nodes = append(item.Nodes, node)
			}
		}
	}

	for _, key := range slices.Sorted(maps.Keys(cas)) {
		report.Items = append(report.Items, *cas[key])
	}

	for _, c := range opts.Clients {
		if c.ClusterCAs != nil && !anyAccepted(c.ClusterCAs, accepted[c.Root]) {
			report.Notes = append(report.Notes, c.Source+" is not for this cluster: not checked")

			continue
		}

		report.Items = append(report.Items, judgeClient(c, accepted[c.Root], opts))
	}

	report.ExitCode = report.exitCode()

	return report, nil
}

func (r *Report) exitCode() int {
	switch {
	case len(r.Unreachable) > 0:
		return ExitUnreachable
	case slices.ContainsFunc(r.Items, Item.Problem):
		return ExitProblem
	default:
		return ExitOK
	}
}

// resolveNodes is rotate-ca's discovery: --nodes, else the fresh members every endpoint knows,
// else the context's nodes, else the endpoints themselves.
func resolveNodes(ctx context.Context, cl Cluster, opts Options, report *Report) ([]string, error) {
	if len(opts.Nodes) > 0 {
		return opts.Nodes, nil
	}

	members, err := rotate.DiscoverMembers(ctx, cl, opts.Endpoints, nil)
	if err != nil {
		return nil, err
	}

	var nodes []string

	for _, m := range members {
		if m.Stale(opts.Now, opts.MemberStaleAfter) {
			report.Notes = append(report.Notes, fmt.Sprintf("member %s left out: not seen since %s (pass --nodes to include it)",
				m.Address, lastSeen(m.LastSeen)))

			continue
		}

		nodes = append(nodes, m.Address)
	}

	if len(nodes) == 0 {
		nodes = opts.FallbackNodes
		report.Notes = append(report.Notes, "no cluster members recorded on the endpoints (an older version): checking the context's nodes")
	}

	return nodes, nil
}

func lastSeen(t time.Time) string {
	if t.IsZero() {
		return "never"
	}

	return t.UTC().Format(time.RFC3339)
}

type nodeResult struct {
	cas      map[rotate.Root]pki.AcceptedCASpec
	statuses map[string]pki.CertificateStatusSpec
	err      error
}

// askNodes reads every node's AcceptedCAs and CertificateStatuses, limit nodes at once.
func askNodes(ctx context.Context, cl Cluster, nodes []string, limit int) []nodeResult {
	results := make([]nodeResult, len(nodes))
	sem := make(chan struct{}, limit)

	var wg sync.WaitGroup

	for i, node := range nodes {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()

			res := &results[i]

			if res.cas, res.err = cl.AcceptedCAs(ctx, node); res.err != nil {
				return
			}

			res.statuses, res.err = cl.CertificateStatuses(ctx, node)
		})
	}

	wg.Wait()

	return results
}

// judgeLeaf: the node's own verdict (expired, untrusted, pending, expiring) stands; a leaf that
// nodepki renews counts as expiring within the window only once its renewal is due and not done,
// so that short-lived leaves renewed on time are fine.
func judgeLeaf(node, id string, spec pki.CertificateStatusSpec, opts Options) Item {
	item := Item{Nodes: []string{node}, Kind: KindLeaf, Root: spec.Root, Name: id, Trusted: spec.Trusted}

	notAfter, notAfterErr := parseTime(spec.NotAfter.String())
	renewAt, renewAtErr := parseTime(spec.RenewAt.String())

	if notAfterErr == nil {
		item.NotAfter = notAfter
		item.DaysLeft = daysLeft(notAfter, opts.Now)
	}

	left := notAfter.Sub(opts.Now)

	switch {
	case spec.State == pki.StatePending || notAfterErr != nil:
		item.State, item.Detail = StatePending, cmp.Or(spec.LastError, "not issued yet")
	case spec.State == pki.StateExpired || left <= 0:
		item.State, item.Detail = StateExpired, "past NotAfter"
	case spec.State == pki.StateUntrusted || !spec.Trusted:
		item.State, item.Detail = StateUntrusted, "does not chain to a CA the node accepts"
	case spec.State == pki.StateExpiring:
		item.State, item.Detail = StateExpiring, cmp.Or(spec.LastError, "renewal overdue")
	case left <= opts.Warn && (renewAtErr != nil || !opts.Now.Before(renewAt)):
		item.State, item.Detail = StateExpiring, fmt.Sprintf("expires within %s and its renewal is due", opts.Warn)
	case spec.State == pki.StateRenewing:
		item.State, item.Detail = StateRenewing, "a new certificate is being issued"
	default:
		item.State = StateOK
		if renewAtErr == nil {
			item.Detail = "renews at " + renewAt.UTC().Format(time.RFC3339)
		}
	}

	return item
}

type acceptedCA struct {
	cert    *x509.Certificate
	issuing bool
}

// collectCAs parses the accepted CA certificates of a root; a root of public keys only (service
// accounts) has nothing that expires.
func collectCAs(spec pki.AcceptedCASpec) (out []acceptedCA, bad []error) {
	for i, p := range spec.Certificates {
		crt, err := certs.ParseCertificate([]byte(p))
		if err != nil {
			bad = append(bad, fmt.Errorf("accepted CA %d cannot be parsed: %w", i+1, err))

			continue
		}

		out = append(out, acceptedCA{cert: crt, issuing: spec.IssuingFingerprint != "" && certs.Fingerprint(crt) == spec.IssuingFingerprint})
	}

	return out, bad
}

func judgeCA(root string, ca acceptedCA, opts Options) Item {
	item := Item{
		Kind:     KindCA,
		Root:     root,
		Name:     subjectName(ca.cert),
		NotAfter: ca.cert.NotAfter.UTC(),
		DaysLeft: daysLeft(ca.cert.NotAfter, opts.Now),
		Trusted:  true,
		State:    StateOK,
		Detail:   "accepted",
	}

	if ca.issuing {
		item.Detail = "issuing"
	}

	switch left := ca.cert.NotAfter.Sub(opts.Now); {
	case left <= 0 || opts.Now.Before(ca.cert.NotBefore):
		item.State, item.Detail = StateExpired, item.Detail+"; rotate it: nodepkictl rotate-ca --"+root
	case left <= opts.Warn:
		item.State, item.Detail = StateExpiring, item.Detail+"; rotate it: nodepkictl rotate-ca --"+root
	}

	return item
}

// judgeClient verifies a client certificate against the CAs the nodes accept for its root.
func judgeClient(c ClientCertificate, accepted []*x509.Certificate, opts Options) Item {
	item := Item{
		Kind:     KindClient,
		Root:     c.Root,
		Name:     c.Source,
		NotAfter: c.Crt.NotAfter.UTC(),
		DaysLeft: daysLeft(c.Crt.NotAfter, opts.Now),
		State:    StateOK,
		Detail:   "roles " + strings.Join(slices.Sorted(slices.Values(c.Crt.Subject.Organization)), ","),
	}

	pool := x509.NewCertPool()
	for _, ca := range accepted {
		pool.AddCert(ca)
	}

	_, err := c.Crt.Verify(x509.VerifyOptions{
		Roots:       pool,
		CurrentTime: c.Crt.NotBefore.Add(time.Second),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	item.Trusted = err == nil && len(accepted) > 0

	left := c.Crt.NotAfter.Sub(opts.Now)

	switch {
	case left <= 0:
		item.State, item.Detail = StateExpired, "the nodes refuse it: get a new one (gen config --with-secrets … -t talosconfig)"
	case len(accepted) == 0:
		item.State, item.Detail = StateUntrusted, "no node reported the accepted "+c.Root+" CAs"
	case !item.Trusted:
		item.State, item.Detail = StateUntrusted, "not signed by a CA the nodes accept: "+err.Error()
	case left <= opts.Warn:
		item.State, item.Detail = StateExpiring, "renew it: nodepkictl config renew"
	}

	return item
}

func anyAccepted(cas, accepted []*x509.Certificate) bool {
	return slices.ContainsFunc(cas, func(ca *x509.Certificate) bool {
		return slices.ContainsFunc(accepted, func(a *x509.Certificate) bool { return a.Equal(ca) })
	})
}

func subjectName(crt *x509.Certificate) string {
	name := crt.Subject.CommonName
	if name == "" {
		name = strings.Join(crt.Subject.Organization, ",")
	}

	return fmt.Sprintf("%s (%s)", cmp.Or(name, "-"), certs.Fingerprint(crt)[:12])
}

func daysLeft(notAfter, now time.Time) int {
	return int(notAfter.Sub(now).Hours() / 24)
}

func parseTime(s string) (time.Time, error) {
	return time.Parse(time.RFC3339, s)
}
