package trustd

import (
	"context"
	"net/netip"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/cluster"
)

// MemberOwner owns the cluster members trustd records. A dedicated owner (rather than "", the
// owner of user input) shows in `get members -o yaml` who recorded a member, and lets the state's
// owner check keep trustd and the control plane's own SelfMemberController from overwriting each
// other's records.
const MemberOwner = "trustd"

// memberRefreshInterval is how long a recorded worker that has not changed keeps its lastSeen: a
// worker renews once in many hours, so signings closer together (retries, a restart loop, a
// flood) do not rewrite the persisted state, which costs a disk sync each time.
const memberRefreshInterval = time.Hour

// recordTimeout bounds the state write of a member; it is not tied to the request, so a worker
// that hangs up right after its answer is still recorded.
const recordTimeout = 5 * time.Second

// recordMember records the worker a certificate was signed for with the profile signed: ID = the
// address the request came from when the certificate names it (workers dial from their node
// address), else the first IP SAN; addresses = the IP SANs, hostname = the CN, lastSeen = the
// signing time, unless the member is recorded as such and was seen less than
// memberRefreshInterval ago. The signing has succeeded whatever happens here: a
// failure is logged, and the worker's next renewal records it again.
func (s *Server) recordMember(ctx context.Context, signed certs.Profile, signedAt time.Time) {
	addresses := make([]string, 0, len(signed.IPAddresses))

	for _, ip := range signed.IPAddresses {
		if addr, ok := netip.AddrFromSlice(ip); ok {
			addresses = append(addresses, addr.Unmap().String())
		}
	}

	logger := s.logger.With(zap.String("cn", signed.CommonName))

	if len(addresses) == 0 {
		logger.Info("the signed certificate names no IP address: not recorded as a cluster member")

		return
	}

	id := addresses[0]
	if from := peerHost(ctx); slices.Contains(addresses, from) {
		id = from
	}
	spec := cluster.MemberSpec{
		Addresses:   addresses,
		Hostname:    signed.CommonName,
		MachineType: machineconfig.TypeWorker,
		LastSeen:    signedAt.UTC().Format(time.RFC3339),
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()

	if existing, err := safe.StateGetByID[*cluster.Member](ctx, s.state, id); err == nil && existing.Metadata().Owner() == MemberOwner {
		if _, fresh := existing.TypedSpec().FreshLastSeen(spec, signedAt, memberRefreshInterval); fresh {
			return
		}
	}

	write := func() error {
		return safe.StateModify(ctx, s.state, cluster.NewMember(id), func(m *cluster.Member) error {
			*m.TypedSpec() = spec

			return nil
		}, state.WithUpdateOwner(MemberOwner))
	}

	err := write()
	if state.IsConflictError(err) && !state.IsOwnerConflictError(err) {
		// Two signings for the same worker at once (both created it): the second one wins.
		err = write()
	}

	switch {
	case state.IsOwnerConflictError(err):
		logger.Warn("not recorded as a cluster member: the member ID is recorded by another writer", zap.String("id", id), zap.Error(err))
	case err != nil:
		logger.Warn("error recording the worker as a cluster member", zap.String("id", id), zap.Error(err))
	}
}
