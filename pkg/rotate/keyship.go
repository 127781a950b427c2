package rotate

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// A new issuing key goes only to a node that is a control plane by an authority other than its
// own word: the plan's control planes, recorded when the plan is made from the control planes'
// own membership records (a worker's record is written by trustd, always as a worker) and never
// changed while the rotation runs. The node's reported key must also be the old CA's key, which
// a worker never held. A node reporting a control-plane config at a later step (a compromised
// worker) is refused instead of patched.

// collectMembers asks every endpoint for its members, for the plan's control planes, when
// discovery has not (the nodes were given with --nodes). An endpoint that cannot be asked is
// reported: the nodes it would have recorded are then judged by their config at the start.
func (r *rotation) collectMembers(ctx context.Context) error {
	if r.memberTypes != nil || (r.plan != nil && len(r.plan.ControlPlanes) > 0) {
		return nil
	}

	if err := r.cl.UseCredentials(ctx, r.creds.operational()); err != nil {
		return err
	}

	r.memberTypes = map[string]string{}

	for _, endpoint := range r.opts.Endpoints {
		members, err := r.cl.Members(ctx, endpoint)
		if err != nil {
			r.out.printf("  cannot list the cluster members on endpoint %s: %v\n", endpoint, err)

			continue
		}

		r.addMemberTypes(members)
	}

	return nil
}

// addMemberTypes records the machine type of each member. A control plane's record is written
// by that control plane; a worker's by trustd, always as a worker, so a worker record settles it.
func (r *rotation) addMemberTypes(members []Member) {
	if r.memberTypes == nil {
		r.memberTypes = map[string]string{}
	}

	for _, m := range members {
		if prev, seen := r.memberTypes[m.Address]; !seen || prev != machineconfig.TypeWorker {
			r.memberTypes[m.Address] = m.MachineType
		}
	}
}

func isControlPlaneType(machineType string) bool {
	return machineType == machineconfig.TypeControlPlane || machineType == machineconfig.TypeInit
}

// recordControlPlanes sets the plan's control planes when it has none: the nodes of the rotation
// recorded as control planes in the members; a node recorded as a worker never is one; a node no
// endpoint records (another control plane's own record is kept on that control plane only) is
// one when its config says so at the start.
func (r *rotation) recordControlPlanes() {
	if len(r.plan.ControlPlanes) > 0 {
		return
	}

	var recorded, byConfig []string

	for _, n := range r.nodes {
		machineType, member := r.memberTypes[n.name]

		switch {
		case member && isControlPlaneType(machineType):
			recorded = append(recorded, n.name)
		case member:
		case n.controlPlane:
			recorded = append(recorded, n.name)
			byConfig = append(byConfig, n.name)
		}
	}

	if len(byConfig) > 0 {
		r.out.printf("  control planes not recorded as members by the endpoints, taken from their config now: %s\n", strings.Join(byConfig, ", "))
	}

	r.plan.ControlPlanes = recorded
	r.planChanged = true
}

// checkKeyShipping refuses to patch a node that reports holding the issuing key of root (so the
// patch would carry the new key) unless the plan names it a control plane and its key is the old CA's.
func (r *rotation) checkKeyShipping(n *node, root Root, rc rootConfig) error {
	rp := r.plan.Roots.Get(root)

	if len(rc.issuingKey) == 0 || rc.issuingFingerprint == rp.New.Fingerprint {
		return nil
	}

	if !slices.Contains(r.plan.ControlPlanes, n.name) {
		return fmt.Errorf("%s reports holding %s, but it is not a control plane of the plan (%s, recorded from the control planes' membership when the plan was made): "+
			"the new key is not sent to it", n.name, root.issuingPath(), strings.Join(r.plan.ControlPlanes, ", "))
	}

	fingerprint, err := keyFingerprint(rc.issuingKey)
	if err != nil || fingerprint != rp.Old.Fingerprint {
		return fmt.Errorf("%s reports a %s that is not the key of the old %s: the new key is not sent to it", n.name, root.issuingPath(), root.what())
	}

	return nil
}
