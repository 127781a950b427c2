package trustd

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/network"
)

// MemberOwner owns the cluster members trustd records. A dedicated owner (rather than "", the
// owner of user input) shows in `get members -o yaml` who recorded a member, and lets the state's
// owner check keep trustd and the control plane's own SelfMemberController from overwriting each
// other's records.
const MemberOwner = "trustd"

// Bounds of the members trustd records.
const (
	// DefaultMaxMembers bounds the workers one control plane records: far above any cluster it
	// signs for, low enough that a flood of join-token holders cannot grow the persisted state
	// without end.
	DefaultMaxMembers = 4096
	// DefaultMemberRetention is how long a worker that stopped renewing stays recorded. A running
	// worker renews about every 16 h and rotate-ca leaves out members not seen for 48 h; a week
	// lets a node that was down for a few days come back as itself.
	DefaultMemberRetention = 7 * 24 * time.Hour
	// memberCollectInterval is how often members past the retention are deleted.
	memberCollectInterval = time.Hour
)

// memberRefreshInterval is how long a recorded worker that has not changed keeps its lastSeen: a
// worker renews once in many hours, so signings closer together (retries, a restart loop, a
// flood) do not rewrite the persisted state, which costs a disk sync each time.
const memberRefreshInterval = time.Hour

// recordTimeout bounds the state write of a member; it is not tied to the request, so a worker
// that hangs up right after its answer is still recorded.
const recordTimeout = 5 * time.Second

type memberOptions struct {
	max       int
	retention time.Duration
	clock     func() time.Time
}

func newMemberOptions(opts Options) (memberOptions, error) {
	m := memberOptions{max: opts.MaxMembers, retention: opts.MemberRetention, clock: opts.Clock}

	if m.max == 0 {
		m.max = DefaultMaxMembers
	}

	if m.retention == 0 {
		m.retention = DefaultMemberRetention
	}

	if m.clock == nil {
		m.clock = time.Now
	}

	if m.max < 0 || m.retention < 0 {
		return memberOptions{}, fmt.Errorf("trustd: MaxMembers %d and MemberRetention %s must not be negative", m.max, m.retention)
	}

	return m, nil
}

// recordMember records the worker a certificate was signed for, under the address the request
// came from and only when the certificate names that address: a worker dials trustd from its
// node address, and a record under any other ID would let one node write another's. Addresses
// = the IP SANs, hostname = the CN, lastSeen = now, unless the member is recorded as such and was
// seen less than memberRefreshInterval ago. A control plane's record is never overwritten, and
// past MaxMembers no new worker is recorded. The signing has succeeded whatever happens here: a
// failure is logged, and the worker's next renewal records it again.
func (s *Server) recordMember(ctx context.Context, requester netip.Addr, signed certs.Profile) {
	addresses := make([]string, 0, len(signed.IPAddresses))

	for _, ip := range signed.IPAddresses {
		if addr, ok := netip.AddrFromSlice(ip); ok {
			addresses = append(addresses, addr.Unmap().String())
		}
	}

	id := requester.String()
	logger := s.logger.With(zap.String("cn", signed.CommonName), zap.String("id", id))

	if !slices.Contains(addresses, id) {
		logger.Info("not recorded as a cluster member: the certificate does not name the address the request came from")

		return
	}

	now := s.members.clock()
	spec := cluster.MemberSpec{
		Addresses:   addresses,
		Hostname:    signed.CommonName,
		MachineType: machineconfig.TypeWorker,
		LastSeen:    now.UTC().Format(time.RFC3339),
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()

	existing, err := safe.StateGetByID[*cluster.Member](ctx, s.state, id)

	switch {
	case err == nil && isControlPlaneMember(existing):
		logger.Warn("not recorded as a cluster member: the ID is a control plane's", zap.String("owner", existing.Metadata().Owner()))

		return
	case err == nil:
		if _, fresh := existing.TypedSpec().FreshLastSeen(spec, now, memberRefreshInterval); fresh {
			return
		}
	case !state.IsNotFoundError(err):
		logger.Warn("error reading the member", zap.Error(err))

		return
	default:
		if full, countErr := s.membersFull(ctx, now); countErr != nil || full {
			logger.Warn("not recorded as a cluster member: the member list is full", zap.Int("max_members", s.members.max), zap.Error(countErr))

			return
		}
	}

	write := func() error {
		return safe.StateModify(ctx, s.state, cluster.NewMember(id), func(m *cluster.Member) error {
			*m.TypedSpec() = spec

			return nil
		}, state.WithUpdateOwner(MemberOwner))
	}

	err = write()
	if state.IsConflictError(err) && !state.IsOwnerConflictError(err) {
		// Two signings for the same worker at once (both created it): the second one wins.
		err = write()
	}

	switch {
	case state.IsOwnerConflictError(err):
		logger.Warn("not recorded as a cluster member: the member ID is recorded by another writer", zap.Error(err))
	case err != nil:
		logger.Warn("error recording the worker as a cluster member", zap.Error(err))
	}
}

// membersFull reports whether the workers recorded reach MaxMembers, after deleting the expired.
func (s *Server) membersFull(ctx context.Context, now time.Time) (bool, error) {
	count, err := s.deleteExpiredMembers(ctx, now)
	if err != nil {
		return false, err
	}

	return count >= s.members.max, nil
}

// collectMembers deletes the members past the retention now and every memberCollectInterval
// until ctx is done.
func (s *Server) collectMembers(ctx context.Context) {
	ticker := time.NewTicker(memberCollectInterval)
	defer ticker.Stop()

	for {
		if _, err := s.deleteExpiredMembers(ctx, s.members.clock()); err != nil && ctx.Err() == nil {
			s.logger.Warn("error deleting expired cluster members", zap.Error(err))
		}

		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// deleteExpiredMembers deletes the workers trustd recorded that were last seen longer than the
// retention before now, and those recorded under an address of this control plane (written by
// an earlier version, which took the member ID from the CSR: they keep the control plane from
// recording itself). It returns how many workers remain.
func (s *Server) deleteExpiredMembers(ctx context.Context, now time.Time) (int, error) {
	members, err := safe.StateListAll[*cluster.Member](ctx, s.state)
	if err != nil {
		return 0, fmt.Errorf("error listing the cluster members: %w", err)
	}

	own := map[netip.Addr]bool{}

	if addresses, err := safe.StateGetByID[*network.NodeAddresses](ctx, s.state, network.CurrentID); err == nil {
		for _, a := range addresses.TypedSpec().Addresses {
			if addr, ok := parseAddr(a); ok {
				own[addr] = true
			}
		}
	}

	var (
		remaining int
		errs      []error
	)

	for m := range members.All() {
		if m.Metadata().Owner() != MemberOwner {
			continue
		}

		id, _ := parseAddr(m.Metadata().ID())

		lastSeen, parseErr := time.Parse(time.RFC3339, m.TypedSpec().LastSeen)
		if parseErr == nil && now.Sub(lastSeen) <= s.members.retention && !own[id] {
			remaining++

			continue
		}

		if err = s.state.Destroy(ctx, m.Metadata(), state.WithDestroyOwner(MemberOwner)); err != nil && !state.IsNotFoundError(err) {
			errs = append(errs, fmt.Errorf("member %s: %w", m.Metadata().ID(), err))

			continue
		}

		s.logger.Info("deleted a worker's cluster member: not seen for the retention period, or recorded under this control plane's address",
			zap.String("id", m.Metadata().ID()), zap.String("last_seen", m.TypedSpec().LastSeen), zap.Duration("retention", s.members.retention))
	}

	return remaining, errors.Join(errs...)
}
