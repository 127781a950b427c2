package api

import (
	"container/list"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	stateclient "github.com/cosi-project/runtime/pkg/state/protobuf/client"
	"go.uber.org/zap"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/resources/cluster"
)

const (
	// peerLookupTimeout bounds asking the other control planes about a node: one that has not
	// answered by then counts as one that could not be asked.
	peerLookupTimeout = 3 * time.Second
	// peerMemberTTL is how long a node another control plane confirmed stays allowed without
	// asking again, so that a burst of calls to one worker asks once. A member the other control
	// plane deletes stays reachable this long at most.
	peerMemberTTL = 30 * time.Second
	// maxPeerMembers bounds the confirmed nodes kept, least recently confirmed first out. Only
	// confirmed nodes are kept: addresses no control plane records take no room.
	maxPeerMembers = 256
)

// forwardingRule ends every refusal of an unknown target: what a control plane forwards to.
const forwardingRule = "a control plane forwards to the members it or another control plane records (`get members` on each), " +
	"the control-plane endpoint and the control planes given to nodepkid --control-plane"

// listFunc returns the names (canonical IDs, addresses and hostnames) of the members the control
// plane peer records.
type listFunc func(ctx context.Context, peer string) (map[string]bool, error)

// peerMembers decides on the targets this control plane does not record itself: it asks the other
// control planes, all at once, for the members they record, and allows the target as soon as one
// of them records it. Nothing is dialed to the target before that. Concurrent lookups share one
// listing per peer (a call to many nodes lists each peer once). Confirmations are kept for
// peerMemberTTL, at most maxPeerMembers of them; refusals are not kept, so a worker that just
// joined through another control plane is reachable at once.
type peerMembers struct {
	logger   *zap.Logger
	list     listFunc
	clock    func() time.Time
	listings singleflight.Group // by peer

	mu        sync.Mutex
	confirmed map[string]*list.Element // by target; the element holds a *confirmation
	order     *list.List               // of *confirmation, most recently confirmed first
}

type confirmation struct {
	target  string
	peer    string
	expires time.Time
}

func newPeerMembers(logger *zap.Logger, lister listFunc, clock func() time.Time) *peerMembers {
	return &peerMembers{logger: logger, list: lister, clock: clock, confirmed: map[string]*list.Element{}, order: list.New()}
}

// confirm returns nil when one of peers records target as a member, else a PermissionDenied
// status naming the control planes that do not record it and those that could not be asked.
func (p *peerMembers) confirm(ctx context.Context, target string, peers []string) error {
	if peer, ok := p.cached(target); ok {
		p.logger.Debug("forwarding to a member another control plane records", zap.String("node", target), zap.String("control_plane", peer), zap.Bool("cached", true))

		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, peerLookupTimeout)
	defer cancel()

	type answer struct {
		peer   string
		member bool
		err    error
	}

	// Buffered for every peer: the askers that answer after the first yes never block.
	answers := make(chan answer, len(peers))

	for _, peer := range peers {
		go func() {
			names, err := p.listing(ctx, peer)
			answers <- answer{peer: peer, member: names[target], err: err}
		}()
	}

	var denied, failed []string

	for range peers {
		a := <-answers

		switch {
		case a.err != nil:
			p.logger.Info("control plane could not be asked whether it records a node", zap.String("node", target), zap.String("control_plane", a.peer), zap.Error(a.err))

			failed = append(failed, a.peer)
		case a.member:
			p.store(target, a.peer)
			p.logger.Debug("forwarding to a member another control plane records", zap.String("node", target), zap.String("control_plane", a.peer))

			return nil
		default:
			denied = append(denied, a.peer)
		}
	}

	return refusal(target, denied, failed)
}

// refusal is the PermissionDenied status of a target no control plane confirmed.
func refusal(target string, denied, failed []string) error {
	slices.Sort(denied)
	slices.Sort(failed)

	var b strings.Builder

	fmt.Fprintf(&b, "node %s is not a member of this cluster known to this node", target)

	if len(denied) > 0 {
		fmt.Fprintf(&b, " or to the control planes it asked (%s)", strings.Join(denied, ", "))
	}

	fmt.Fprintf(&b, ": not forwarded (%s)", forwardingRule)

	if len(failed) > 0 {
		fmt.Fprintf(&b, "; control planes that could not be asked: %s (if the trustd of one of them signed the node's certificate, retry, or address the call through it)",
			strings.Join(failed, ", "))
	}

	return status.Error(codes.PermissionDenied, b.String())
}

func (p *peerMembers) cached(target string) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()

	elem, ok := p.confirmed[target]
	if !ok {
		return "", false
	}

	c := elem.Value.(*confirmation) //nolint:forcetypeassert // the list holds *confirmation only
	if !p.clock().Before(c.expires) {
		p.order.Remove(elem)
		delete(p.confirmed, target)

		return "", false
	}

	return c.peer, true
}

func (p *peerMembers) store(target, peer string) {
	p.mu.Lock()
	defer p.mu.Unlock()

	c := &confirmation{target: target, peer: peer, expires: p.clock().Add(peerMemberTTL)}

	if elem, ok := p.confirmed[target]; ok {
		elem.Value = c
		p.order.MoveToFront(elem)

		return
	}

	for len(p.confirmed) >= maxPeerMembers {
		oldest := p.order.Back()
		p.order.Remove(oldest)
		delete(p.confirmed, oldest.Value.(*confirmation).target) //nolint:forcetypeassert // the list holds *confirmation only
	}

	p.confirmed[target] = p.order.PushFront(c)
}

// listing returns the member names peer records, from one listing shared by the lookups that
// need it at the same time. The listing has its own timeout, so that a lookup that gives up
// does not fail the others that share it.
func (p *peerMembers) listing(ctx context.Context, peer string) (map[string]bool, error) {
	ch := p.listings.DoChan(peer, func() (any, error) {
		listCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), peerLookupTimeout)
		defer cancel()

		return p.list(listCtx, peer)
	})

	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("asking control plane %s: %w", peer, context.Cause(ctx))
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}

		return r.Val.(map[string]bool), nil //nolint:forcetypeassert // list returns map[string]bool only
	}
}

// memberNamesOf lists the members the control plane peer records, over the forwarding connection
// (mutual TLS with this node's impersonator certificate, the peer's server certificate verified
// against the accepted OS CAs). The call carries no node metadata, so the peer answers from its
// own state and never forwards it; it runs with the reader role.
func (f *forwarder) memberNamesOf(ctx context.Context, peer string) (map[string]bool, error) {
	rc, err := f.acquire(peer)
	if err != nil {
		return nil, err
	}

	defer f.release(rc)

	ctx = metadata.NewOutgoingContext(ctx, metadata.Pairs(RoleMetadataKey, role.Reader))

	members, err := safe.StateListAll[*cluster.Member](ctx, state.WrapCore(stateclient.NewAdapter(v1alpha1.NewStateClient(rc.conn))))
	if err != nil {
		return nil, fmt.Errorf("error listing the members of control plane %s: %w", peer, err)
	}

	names := map[string]bool{}

	for m := range members.All() {
		for _, name := range memberNames(m) {
			names[name] = true
		}
	}

	return names, nil
}
