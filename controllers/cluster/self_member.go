package cluster

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/network"
)

// DefaultSelfRefreshInterval is how often a control plane renews its own member's lastSeen: often
// enough that rotate-ca never takes a running control plane for a stale member (48 h), rarely
// enough that the persisted state is not rewritten for nothing.
const DefaultSelfRefreshInterval = 12 * time.Hour

// SelfMemberController makes a control plane record itself as a cluster.Member: ID = its first
// node address, the other fields from NodeAddresses/current, the hostname and the machine type.
// LastSeen is set when the member is created or changes, and renewed every RefreshInterval by a
// timer; a reconcile that changes nothing writes nothing. On a worker, or without addresses, the
// controller's member is removed; before the machine config or the addresses exist, it is kept.
type SelfMemberController struct {
	Hostname string
	// RefreshInterval overrides DefaultSelfRefreshInterval.
	RefreshInterval time.Duration
	// Clock overrides time.Now for lastSeen.
	Clock func() time.Time
}

// Name implements controller.Controller interface.
func (ctrl *SelfMemberController) Name() string {
	return "cluster.SelfMemberController"
}

// Inputs implements controller.Controller interface.
func (ctrl *SelfMemberController) Inputs() []controller.Input {
	return []controller.Input{
		configview.Input(),
		{
			Namespace: network.NamespaceName,
			Type:      network.NodeAddressesType,
			ID:        optional.Some(network.CurrentID),
			Kind:      controller.InputWeak,
		},
	}
}

// Outputs implements controller.Controller interface.
//
// Shared: trustd records the workers in the same type, under its own owner.
func (ctrl *SelfMemberController) Outputs() []controller.Output {
	return []controller.Output{{Type: cluster.MemberType, Kind: controller.OutputShared}}
}

// Run implements controller.Controller interface.
func (ctrl *SelfMemberController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	refresh := time.NewTimer(0)
	refresh.Stop()

	defer refresh.Stop()

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-refresh.C:
		}

		doc, err := configview.Read(ctx, r)
		if err != nil {
			return err
		}

		addresses, addressesKnown, err := ctrl.nodeAddresses(ctx, r)
		if err != nil {
			return err
		}

		// Until the node knows what it is and where it is (at start, before the config or the
		// addresses are loaded), its persisted member is left as it is: removing and recreating
		// it would renew lastSeen at every restart.
		if doc == nil || (doc.Machine.IsControlPlane() && !addressesKnown) {
			continue
		}

		machine := doc.Machine

		r.StartTrackingOutputs()

		refresh.Stop()

		if machine.IsControlPlane() {
			if len(addresses) == 0 {
				logger.Debug("no node address yet: not recorded as a member")
			} else {
				next, err := ctrl.record(ctx, r, logger, cluster.MemberSpec{Addresses: addresses, Hostname: ctrl.Hostname, MachineType: machine.Type})
				if err != nil {
					return err
				}

				if next > 0 {
					refresh.Reset(next)
				}
			}
		}

		if err = safe.CleanupOutputs[*cluster.Member](ctx, r); err != nil {
			return fmt.Errorf("error cleaning up members: %w", err)
		}
	}
}

// record writes the node's member unless it is unchanged and seen within the refresh interval,
// and returns when it must be renewed (0: never, because the ID is taken by another writer).
func (ctrl *SelfMemberController) record(ctx context.Context, r controller.Runtime, logger *zap.Logger, want cluster.MemberSpec) (time.Duration, error) {
	id := want.Addresses[0]
	interval := cmp.Or(ctrl.RefreshInterval, DefaultSelfRefreshInterval)
	now := ctrl.now()

	existing, err := safe.ReaderGetByID[*cluster.Member](ctx, r, id)

	switch {
	case state.IsNotFoundError(err):
	case err != nil:
		return 0, fmt.Errorf("error reading member %s: %w", id, err)
	case existing.Metadata().Owner() != ctrl.Name():
		// Only a worker's CSR naming this node's address gets here (trustd records it); keep that
		// record rather than fight over it, and say why this node is not listed as itself.
		logger.Warn("member ID taken by another writer: this control plane is not recorded as itself",
			zap.String("id", id), zap.String("owner", existing.Metadata().Owner()))

		return 0, nil
	default:
		if lastSeen, ok := existing.TypedSpec().FreshLastSeen(want, now, interval); ok {
			// Unchanged, so this writes nothing; it still marks the member as an output of this
			// pass, so that the cleanup keeps it.
			want.LastSeen = existing.TypedSpec().LastSeen

			return lastSeen.Add(interval).Sub(now), ctrl.write(ctx, r, id, want)
		}
	}

	want.LastSeen = now.UTC().Format(time.RFC3339)

	if err = ctrl.write(ctx, r, id, want); err != nil {
		return 0, err
	}

	logger.Info("recorded this control plane as a cluster member", zap.String("id", id), zap.String("last_seen", want.LastSeen))

	return interval, nil
}

func (ctrl *SelfMemberController) write(ctx context.Context, r controller.Runtime, id resource.ID, spec cluster.MemberSpec) error {
	if err := safe.WriterModify(ctx, r, cluster.NewMember(id), func(m *cluster.Member) error {
		*m.TypedSpec() = spec

		return nil
	}); err != nil {
		return fmt.Errorf("error writing member %s: %w", id, err)
	}

	return nil
}

func (ctrl *SelfMemberController) now() time.Time {
	if ctrl.Clock != nil {
		return ctrl.Clock()
	}

	return time.Now()
}

// nodeAddresses returns NodeAddresses/current (sorted); known is false before it exists.
func (ctrl *SelfMemberController) nodeAddresses(ctx context.Context, r controller.Reader) (addresses []string, known bool, err error) {
	res, err := safe.ReaderGetByID[*network.NodeAddresses](ctx, r, network.CurrentID)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil, false, nil
		}

		return nil, false, fmt.Errorf("error reading node addresses: %w", err)
	}

	return slices.Clone(res.TypedSpec().Addresses), true, nil
}
