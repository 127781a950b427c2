package api

import (
	"context"
	"fmt"
	"net/url"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"

	"github.com/nodepki/nodepki/resources/cluster"
)

// forwardingTarget allows forwarding to target (canonical form) only when it names a cluster
// member this node records (its ID, one of its addresses or its hostname), a configured control
// plane (Options.ControlPlanes) or the host of the control-plane endpoint. Forwarding dials with this node's impersonator certificate:
// without the check any caller could make a control plane dial any host on the API port.
func (s *Server) forwardingTarget(ctx context.Context, target string) error {
	for _, cp := range s.opts.ControlPlanes {
		if canonicalNode(cp) == target {
			return nil
		}
	}

	members, err := safe.StateListAll[*cluster.Member](ctx, s.opts.State)
	if err != nil {
		return fmt.Errorf("error listing the cluster members: %w", err)
	}

	for m := range members.All() {
		if canonicalNode(m.Metadata().ID()) == target || (m.TypedSpec().Hostname != "" && canonicalNode(m.TypedSpec().Hostname) == target) {
			return nil
		}

		for _, a := range m.TypedSpec().Addresses {
			if canonicalNode(a) == target {
				return nil
			}
		}
	}

	cfg, err := s.currentConfig(ctx)
	if err != nil && !state.IsNotFoundError(err) {
		return err
	}

	if cfg != nil {
		if doc := cfg.Document(); doc.Cluster != nil && doc.Cluster.ControlPlane != nil {
			if u, parseErr := url.Parse(doc.Cluster.ControlPlane.Endpoint); parseErr == nil && u.Hostname() != "" && canonicalNode(u.Hostname()) == target {
				return nil
			}
		}
	}

	return fmt.Errorf("%s is neither a recorded cluster member, a configured control plane nor the control-plane endpoint", target)
}
