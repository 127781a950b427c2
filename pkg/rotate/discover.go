package rotate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// DefaultMemberStaleAfter is the age past which a member is left out of the discovered nodes:
// two node API certificate lifetimes. A running worker renews its certificate through trustd
// (and so its member) about every 16 h, a control plane refreshes its own every 12 h.
const DefaultMemberStaleAfter = 48 * time.Hour

// resolveNodes settles the nodes of the rotation: Nodes when given, else the members the control
// planes behind the endpoints know, else (when none knows any) FallbackNodes.
func (r *rotation) resolveNodes(ctx context.Context) error {
	if len(r.opts.Nodes) > 0 {
		return nil
	}

	nodes, err := r.discover(ctx)
	if err != nil {
		return err
	}

	if len(nodes) == 0 {
		if len(r.opts.FallbackNodes) == 0 {
			return errors.New("no nodes: none discovered through the endpoints (nodes of an older version record no cluster members) " +
				"and the context has none: list every node of the cluster with --nodes")
		}

		r.out.printf("  no node discovered through the endpoints (nodes of an older version record no cluster members): using the context's nodes %s\n",
			strings.Join(r.opts.FallbackNodes, ", "))

		nodes = r.opts.FallbackNodes
	}

	if err = checkNodeList(nodes); err != nil {
		return err
	}

	r.opts.Nodes = nodes

	return nil
}

// discover lists the members of every endpoint and returns the union of the fresh ones, control
// planes first; stale members are reported and left out. Any endpoint that cannot be asked is an
// error: a worker only that control plane signed for would be missed, and a node left out of a
// rotation stops trusting the others at the retire step.
func (r *rotation) discover(ctx context.Context) ([]string, error) {
	if err := r.cl.UseCredentials(ctx, r.creds.operational()); err != nil {
		return nil, err
	}

	members, err := DiscoverMembers(ctx, r.cl, r.opts.Endpoints, r.addMemberTypes)
	if err != nil {
		return nil, err
	}

	var (
		nodes []string
		found []string
		now   = r.opts.Now()
	)

	for _, m := range members {
		if m.Stale(now, r.opts.MemberStaleAfter) {
			r.out.node(m.Address, fmt.Sprintf("stale member, last seen %s, left out; pass -n to include it", lastSeenText(m.LastSeen, now)))

			continue
		}

		nodes = append(nodes, m.Address)
		found = append(found, fmt.Sprintf("%s (%s)", m.Address, cmp.Or(m.MachineType, "unknown type")))
	}

	if len(found) > 0 {
		r.out.printf("  nodes discovered through the endpoints: %s\n", strings.Join(found, ", "))
	}

	return nodes, nil
}

// MemberLister is the part of Cluster discovery needs.
type MemberLister interface {
	Members(ctx context.Context, endpoint string) ([]Member, error)
}

// DiscoverMembers asks the control plane behind every endpoint for the cluster members it knows
// and returns their union, control planes first. Any endpoint that cannot be asked is an error: a
// worker only that control plane signed for would be missed. each, when not nil, sees every
// endpoint's own records before they are merged.
func DiscoverMembers(ctx context.Context, cl MemberLister, endpoints []string, each func([]Member)) ([]Member, error) {
	known := map[string]Member{}

	for _, endpoint := range endpoints {
		members, err := cl.Members(ctx, endpoint)
		if err != nil {
			return nil, fmt.Errorf("listing the cluster members on endpoint %s: %w (discovery asks every endpoint: fix it, "+
				"or pass --nodes with every node of the cluster)", endpoint, err)
		}

		// Each control plane knows the workers it signed for, when they last renewed there: the
		// freshest record of a member counts.
		for _, m := range members {
			if prev, ok := known[m.Address]; !ok || m.LastSeen.After(prev.LastSeen) {
				known[m.Address] = m
			}
		}

		if each != nil {
			each(members)
		}
	}

	members := make([]Member, 0, len(known))
	for _, m := range known {
		members = append(members, m)
	}

	slices.SortFunc(members, compareMembers)

	return members, nil
}

// Stale reports whether the member was last seen more than staleAfter before now, or never.
func (m Member) Stale(now time.Time, staleAfter time.Duration) bool {
	return m.LastSeen.IsZero() || now.Sub(m.LastSeen) > staleAfter
}

// compareMembers orders control planes before workers, then by address.
func compareMembers(a, b Member) int {
	aWorker, bWorker := a.MachineType == machineconfig.TypeWorker, b.MachineType == machineconfig.TypeWorker
	if aWorker != bWorker {
		if aWorker {
			return 1
		}

		return -1
	}

	aAddr, aErr := netip.ParseAddr(a.Address)
	bAddr, bErr := netip.ParseAddr(b.Address)

	if aErr == nil && bErr == nil {
		return aAddr.Compare(bAddr)
	}

	return strings.Compare(a.Address, b.Address)
}

func lastSeenText(seen, now time.Time) string {
	if seen.IsZero() {
		return "never (no lastSeen recorded)"
	}

	return fmt.Sprintf("%s (%s ago)", seen.UTC().Format(time.RFC3339), now.Sub(seen).Round(time.Minute))
}

// checkNodeList refuses empty and repeated node names.
func checkNodeList(nodes []string) error {
	seen := map[string]bool{}

	for _, n := range nodes {
		if strings.TrimSpace(n) == "" {
			return errors.New("empty node name in the node list")
		}

		if seen[n] {
			return fmt.Errorf("node %s is listed twice", n)
		}

		seen[n] = true
	}

	return nil
}
