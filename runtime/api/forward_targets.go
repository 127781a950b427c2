package api

import (
	"context"
	"net/netip"
	"net/url"
	"slices"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/cluster"
)

// forwardingTarget allows forwarding to target (canonical form) only when it names a cluster
// member this node records (its ID, one of its addresses or its hostname), a configured control
// plane (Options.ControlPlanes) or the host of the control-plane endpoint, or else when one of
// the other control planes records it as a member (a worker gets its certificate from the trustd
// of one control plane only, and that one alone records it). Forwarding dials with this node's
// impersonator certificate: without the check any caller could make a control plane dial any host
// on the API port. The refusal is a PermissionDenied status.
func (s *Server) forwardingTarget(ctx context.Context, target string) error {
	known, peers, err := s.recordedTarget(ctx, target)
	if err != nil {
		return status.Errorf(status.Code(err), "node %s: %s", target, status.Convert(err).Message())
	}

	if known {
		return nil
	}

	return s.peerMembers.confirm(ctx, target, peers)
}

// recordedTarget reports whether this node allows target by its own records, and otherwise the
// control planes to ask about it (canonical, not this node): the configured ones given by address,
// the control planes among the recorded members and the control-plane endpoint host.
func (s *Server) recordedTarget(ctx context.Context, target string) (known bool, peers []string, err error) {
	addPeer := func(p string) {
		if p = canonicalNode(p); p != "" && !s.material.isLocal(p) && !slices.Contains(peers, p) {
			peers = append(peers, p)
		}
	}

	for _, cp := range s.opts.ControlPlanes {
		if canonicalNode(cp) == target {
			return true, nil, nil
		}

		// A control plane given by name is given by its address too (cluster create passes both,
		// the name for trustd's binding): asking by name would send every refusal to DNS.
		if _, err := netip.ParseAddr(canonicalNode(cp)); err == nil {
			addPeer(cp)
		}
	}

	members, err := safe.StateListAll[*cluster.Member](ctx, s.opts.State)
	if err != nil {
		return false, nil, status.Errorf(codes.Unavailable, "error listing the cluster members: %v", err)
	}

	for m := range members.All() {
		if memberNamed(m, target) {
			return true, nil, nil
		}

		if mt := m.TypedSpec().MachineType; mt == machineconfig.TypeControlPlane || mt == machineconfig.TypeInit {
			addPeer(m.Metadata().ID())
		}
	}

	cfg, err := s.currentConfig(ctx)
	if err != nil && !state.IsNotFoundError(err) {
		return false, nil, err
	}

	if cfg != nil {
		if doc := cfg.Document(); doc.Cluster != nil && doc.Cluster.ControlPlane != nil {
			if u, parseErr := url.Parse(doc.Cluster.ControlPlane.Endpoint); parseErr == nil && u.Hostname() != "" {
				if canonicalNode(u.Hostname()) == target {
					return true, nil, nil
				}

				addPeer(u.Hostname())
			}
		}
	}

	return false, peers, nil
}

// memberNamed reports whether target (canonical) is one of memberNames(m).
func memberNamed(m *cluster.Member, target string) bool {
	return slices.Contains(memberNames(m), target)
}

// memberNames are the canonical names a member is reached by: its ID, its addresses and its
// hostname.
func memberNames(m *cluster.Member) []string {
	names := []string{canonicalNode(m.Metadata().ID())}

	for _, a := range m.TypedSpec().Addresses {
		names = append(names, canonicalNode(a))
	}

	if m.TypedSpec().Hostname != "" {
		names = append(names, canonicalNode(m.TypedSpec().Hostname))
	}

	return names
}
