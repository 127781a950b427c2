package rotate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/siderolabs/go-retry/retry"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/ctxtime"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// accept adds the new roots to every node's accepted ones and verifies that every node accepts
// them (for os: a client certificate of the new CA, on each node's own address). Then the
// talosconfig becomes the transitional one.
func (r *rotation) accept(ctx context.Context) error {
	r.out.step(StepAccept, r.stepText(PhaseAccepted, "add the new roots to the accepted ones (control planes first)"))

	if err := r.applyPhase(ctx, PhaseAccepted); err != nil {
		return err
	}

	what := "every node accepts the new roots"
	if r.rotatesOS() {
		what += " and a client certificate of the new OS CA (each node dialed directly)"
	}

	r.out.printf("  verify: %s\n", r.verifyText(PhaseAccepted, what))

	if err := r.waitNodes(ctx, r.nodes, r.checkAccepted); err != nil {
		return fmt.Errorf("%s: %w", StepAccept, err)
	}

	if err := r.writeEtcdClientDir("transitional (trusts the old and the new etcd CA, client certificate of the new CA)",
		r.etcdRoots(true)...); err != nil {
		return err
	}

	if err := r.writeTransitionalKubeconfig(ctx); err != nil {
		return err
	}

	if !r.rotatesOS() {
		return nil
	}

	if err := r.cl.UseCredentials(ctx, []Credentials{*r.creds.transitional}); err != nil {
		return err
	}

	// A rerun after the switch finds the final talosconfig already written: it stays.
	final, err := r.talosconfigHolds(*r.creds.final)
	if err != nil || final {
		return err
	}

	changed, err := r.writeTalosconfig(*r.creds.transitional,
		"transitional (trusts the old and the new OS CA, client certificate of the new CA)")
	if err != nil {
		return err
	}

	if changed && r.opts.ClientGrace > 0 {
		// The old talosconfig stops working when the nodes' certificates change: give clients
		// that read it just before a moment to finish and read the new one.
		return ctxtime.Sleep(ctx, r.opts.ClientGrace)
	}

	return nil
}

// switchCA makes the new roots issue (with the new keys on the nodes that held the old keys), the
// old ones staying accepted, and waits until every node's leaves are issued by the new roots and
// trusted. Control planes go first and must have switched before workers, which get their node API
// certificate from a control plane's trustd. For os, the final credentials are then verified on
// every node, and the talosconfig becomes the final one.
func (r *rotation) switchCA(ctx context.Context) error {
	r.out.step(StepSwitch, r.stepText(PhaseSwitched,
		"the new roots issue, the old ones stay accepted (control planes first; workers get the certificate only)"))

	for _, group := range [][]*node{r.controlPlanes(), r.workers()} {
		if len(group) == 0 {
			continue
		}

		if err := r.applyGroup(ctx, group, PhaseSwitched); err != nil {
			return err
		}

		r.out.printf("  wait: %s\n", r.verifyText(PhaseSwitched, groupName(group)+"' leaves issued by the new roots and trusted"))

		if err := r.waitNodes(ctx, group, r.checkIssued); err != nil {
			return fmt.Errorf("%s: %w", StepSwitch, err)
		}
	}

	if err := r.writeEtcdClientDir("final (trusts the new etcd CA only)", r.etcdRoots(false)...); err != nil {
		return err
	}

	if !r.rotatesOS() {
		return nil
	}

	r.out.printf("  verify: the final credentials (trusting the new OS CA only) on every node, directly and through the endpoints\n")

	if err := r.waitNodes(ctx, r.nodes, r.checkFinal); err != nil {
		return fmt.Errorf("%s: %w", StepSwitch, err)
	}

	_, err := r.writeTalosconfig(*r.creds.final, "final (trusts the new OS CA only)")

	return err
}

func groupName(group []*node) string {
	if group[0].controlPlane {
		return "control planes"
	}

	return "workers"
}

// retire removes the old roots and verifies that they are gone (for os: a client certificate of
// the old CA is refused by every node).
func (r *rotation) retire(ctx context.Context) error {
	r.out.step(StepRetire, r.stepText(PhaseRetired, "remove the old roots (control planes first)"))

	if err := r.applyPhase(ctx, PhaseRetired); err != nil {
		return err
	}

	what := "the old roots are gone from every node, every leaf is trusted"
	if r.rotatesOS() && r.creds.oldCA != nil {
		what += ", a client certificate of the old OS CA is refused"
	}

	r.out.printf("  verify: %s\n", r.verifyText(PhaseRetired, what))

	if err := r.waitNodes(ctx, r.nodes, r.checkRetired); err != nil {
		return fmt.Errorf("%s: %w", StepRetire, err)
	}

	return nil
}

// output writes the final talosconfig (already written at the switch), the final kubeconfig,
// secrets.yaml and marks the plan complete.
func (r *rotation) output(ctx context.Context) error {
	r.out.step(StepOutput, "talosconfig, kubeconfig, secrets.yaml, plan")

	if r.rotatesOS() {
		if _, err := r.writeTalosconfig(*r.creds.final, "final (trusts the new OS CA only)"); err != nil {
			return err
		}
	}

	if err := r.finishKubeconfig(ctx); err != nil {
		return err
	}

	if r.opts.SecretsPath != "" {
		backup, changed, err := updateSecrets(r.opts.SecretsPath, r.plan, r.opts.Now())
		if err != nil {
			return err
		}

		if changed {
			r.out.printf("  secrets %s: updated with the new roots (the previous one is in %s)\n", r.opts.SecretsPath, backup)
		} else {
			r.out.printf("  secrets %s: already holds the new roots\n", r.opts.SecretsPath)
		}
	}

	completed := r.opts.Now().UTC().Truncate(time.Second)
	r.plan.Completed = &completed

	if err := r.plan.Save(r.opts.PlanPath); err != nil {
		return err
	}

	r.out.printf("  plan %s: marked complete (it still holds the new keys: keep it safe or delete it)\n", r.opts.PlanPath)
	r.out.printf("rotation complete: %s\n", rootNames(r.plan.Roots.List()))

	return nil
}

// writeTalosconfig sets the context's credentials in the talosconfig and says so.
func (r *rotation) writeTalosconfig(creds Credentials, what string) (bool, error) {
	if r.opts.TalosconfigPath == "" {
		return false, nil
	}

	changed, err := writeTalosconfig(r.opts.TalosconfigPath, r.opts.ContextName, r.opts.Context, creds)
	if err != nil {
		return false, err
	}

	if changed {
		r.out.printf("  talosconfig %s: %s\n", r.opts.TalosconfigPath, what)
	}

	return changed, nil
}

// talosconfigHolds reports whether the talosconfig's context has these credentials.
func (r *rotation) talosconfigHolds(creds Credentials) (bool, error) {
	if r.opts.TalosconfigPath == "" {
		return false, nil
	}

	cfg, err := clientconfig.Open(r.opts.TalosconfigPath)

	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	}

	cctx := cfg.Contexts[r.opts.ContextName]
	if cctx == nil {
		return false, nil
	}

	want := creds.Context(nil)

	return cctx.CA == want.CA && cctx.Crt == want.Crt && cctx.Key == want.Key, nil
}

// applyPhase takes the control planes, then the workers, to the phase.
func (r *rotation) applyPhase(ctx context.Context, target Phase) error {
	for _, group := range [][]*node{r.controlPlanes(), r.workers()} {
		if err := r.applyGroup(ctx, group, target); err != nil {
			return err
		}
	}

	return nil
}

// applyGroup patches each node of the group that is not yet at the phase. The patch is computed
// from the node's config as read just before, so a node that is already there gets none.
func (r *rotation) applyGroup(ctx context.Context, group []*node, target Phase) error {
	if len(group) > 1 && r.rollsKubeAPIServers(group) {
		return r.applyOneByOne(ctx, group, target)
	}

	err := r.eachNode(ctx, group, func(ctx context.Context, n *node) (string, error) {
		return retryUnavailable(ctx, func() (string, error) {
			raw, err := r.cl.MachineConfig(ctx, n.name)
			if err != nil {
				return "", fmt.Errorf("reading the machine config: %w", err)
			}

			cfg, err := machineconfig.Parse(raw)
			if err != nil {
				return "", fmt.Errorf("the machine config cannot be parsed: %w", err)
			}

			patches, err := r.nodePatches(n, cfg, target)
			if err != nil {
				return "", err
			}

			if len(patches) == 0 {
				return noPatch(target), nil
			}

			if _, err = applyLocally(cfg, patches); err != nil {
				return "", err
			}

			data := make([][]byte, 0, len(patches))
			for _, p := range patches {
				data = append(data, p.Data)
			}

			if err = r.cl.ApplyPatches(ctx, n.name, data); err != nil {
				return "", fmt.Errorf("applying the patches: %w", err)
			}

			return "", nil
		})
	})
	if err != nil {
		return fmt.Errorf("%s: %w", target.stepName(), err)
	}

	return nil
}

// nodePatches returns the patches of every rotated root of the node for the phase.
func (r *rotation) nodePatches(n *node, cfg *machineconfig.Config, target Phase) ([]*Patch, error) {
	var out []*Patch

	for _, root := range n.roots {
		rc, err := readRoot(cfg.Document(), root)
		if err != nil {
			return nil, err
		}

		if err = r.checkKeyShipping(n, root, rc); err != nil {
			return nil, err
		}

		p, err := patchFor(root, rc, r.plan.Roots.Get(root), target)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", root, err)
		}

		if p != nil {
			out = append(out, p)
		}
	}

	return out, nil
}

// applyLocally applies the patches to a config and validates the result, as the node will.
func applyLocally(cfg *machineconfig.Config, patches []*Patch) (*machineconfig.Config, error) {
	loaded := make([]machineconfig.Patch, 0, len(patches))

	for _, p := range patches {
		lp, err := machineconfig.LoadPatch(p.Data)
		if err != nil {
			return nil, fmt.Errorf("%s patch: %w", p.Root, err)
		}

		loaded = append(loaded, lp)
	}

	next, err := machineconfig.Apply(cfg, loaded...)
	if err != nil {
		return nil, fmt.Errorf("the patches do not apply: %w", err)
	}

	if err = next.Validate(); err != nil {
		return nil, fmt.Errorf("the patches would make the config invalid: %w", err)
	}

	return next, nil
}

// plannedStep is the patches of one step for each node (index of rotation.nodes).
type plannedStep struct {
	target  Phase
	patches [][]*Patch
}

// simulate computes every step's patches on every node by applying them to local copies of the
// configs, and checks that each result is valid and that the last one has the new roots only.
func (r *rotation) simulate() ([]plannedStep, error) {
	steps := []plannedStep{{target: PhaseAccepted}, {target: PhaseSwitched}, {target: PhaseRetired}}
	for i := range steps {
		steps[i].patches = make([][]*Patch, len(r.nodes))
	}

	var errs []error

	for i, n := range r.nodes {
		cfg := n.cfg

		for k := range steps {
			patches, err := r.nodePatches(n, cfg, steps[k].target)
			if err == nil && len(patches) > 0 {
				cfg, err = applyLocally(cfg, patches)
			}

			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %s step: %w", n.name, steps[k].target.stepName(), err))

				break
			}

			steps[k].patches[i] = patches
		}
	}

	return steps, errors.Join(errs...)
}

// dryRun prints every patch the rotation would apply.
func (r *rotation) dryRun() error {
	steps, err := r.simulate()
	if err != nil {
		return err
	}

	index := map[*node]int{}
	for i, n := range r.nodes {
		index[n] = i
	}

	ordered := append(r.controlPlanes(), r.workers()...)

	for _, s := range steps {
		r.out.step(s.target.stepName(), "patches that would be applied (dry run; private keys and join tokens shown as ******)")

		for _, n := range ordered {
			patches := s.patches[index[n]]
			if len(patches) == 0 {
				r.out.node(n.name, noPatch(s.target))

				continue
			}

			r.out.node(n.name, fmt.Sprintf("%d patch(es)", len(patches)))

			for _, p := range patches {
				r.out.printf("    # %s\n%s", p.Root, indent(string(p.Redacted), "    "))
			}
		}
	}

	if r.rotatesOS() && r.opts.TalosconfigPath != "" {
		r.out.printf("  talosconfig %s would become transitional after accept and final after switch\n", r.opts.TalosconfigPath)
	}

	if r.opts.SecretsPath != "" {
		r.out.printf("  secrets %s would get the new roots at the end (with a backup)\n", r.opts.SecretsPath)
	}

	r.dryRunKubeconfig()

	r.out.printf("dry run: nothing was changed; rerun with --dry-run=false to rotate\n")

	return nil
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}

	return strings.Join(lines, "")
}

// checkAccepted: every root of the node accepts the new material; for os, a client certificate
// of the new CA is accepted on the node's own address.
func (r *rotation) checkAccepted(ctx context.Context, n *node) (string, error) {
	accepted, err := r.cl.AcceptedCAs(ctx, n.name)
	if err != nil {
		return "", err
	}

	for _, root := range n.roots {
		if root == RootJoinToken {
			continue // no AcceptedCAs: checkJoinToken asks trustd
		}

		rp := r.plan.Roots.Get(root)

		spec, ok := accepted[root]
		if !ok || !slices.Contains(spec.Fingerprints, rp.New.Fingerprint) {
			return "", fmt.Errorf("the new %s %s is not accepted yet", root, root.what())
		}
	}

	if r.rotatesOS() && slices.Contains(n.roots, RootOS) {
		if err = r.cl.Probe(ctx, n.name, *r.creds.transitional, true); err != nil {
			return "", fmt.Errorf("a client certificate of the new OS CA is refused: %w", err)
		}
	}

	detail, err := r.checkEtcd(ctx, n, etcdAccepted)
	if err != nil {
		return "", err
	}

	more, err := r.checkJoinToken(ctx, n, PhaseAccepted)
	if detail, err = joinDetails(detail, more, err); err != nil {
		return "", err
	}

	return r.withKube(ctx, n, PhaseAccepted, detail, nil)
}

// checkIssued: every root of the node issues with the new material and every leaf of those roots
// is issued by it and trusted.
func (r *rotation) checkIssued(ctx context.Context, n *node) (string, error) {
	detail, err := r.checkLeaves(ctx, n, false)
	if err != nil {
		return "", err
	}

	more, err := r.checkEtcd(ctx, n, etcdSwitched)
	if detail, err = joinDetails(detail, more, err); err != nil {
		return "", err
	}

	more, err = r.checkJoinToken(ctx, n, PhaseSwitched)
	if detail, err = joinDetails(detail, more, err); err != nil {
		return "", err
	}

	return r.withKube(ctx, n, PhaseSwitched, detail, nil)
}

// checkRetired: checkIssued, the old material is no longer accepted, and for os the final
// credentials work while a client certificate of the old CA is refused.
func (r *rotation) checkRetired(ctx context.Context, n *node) (string, error) {
	detail, err := r.checkLeaves(ctx, n, true)
	if err != nil {
		return "", err
	}

	more, err := r.checkEtcd(ctx, n, etcdRetired)
	if detail, err = joinDetails(detail, more, err); err != nil {
		return "", err
	}

	more, err = r.checkJoinToken(ctx, n, PhaseRetired)
	if detail, err = joinDetails(detail, more, err); err != nil {
		return "", err
	}

	if detail, err = r.withKube(ctx, n, PhaseRetired, detail, nil); err != nil || !r.rotatesOS() {
		return detail, err
	}

	if err = r.cl.Probe(ctx, n.name, *r.creds.final, true); err != nil {
		return "", fmt.Errorf("the final credentials are refused: %w", err)
	}

	if r.creds.oldCA != nil {
		err = r.cl.Probe(ctx, n.name, *r.creds.oldCA, true)

		switch status.Code(err) {
		case codes.OK:
			return "", errors.New("a client certificate of the old OS CA is still accepted")
		case codes.Unauthenticated:
		default:
			return "", fmt.Errorf("checking that a client certificate of the old OS CA is refused: %w", err)
		}
	}

	return detail, nil
}

func (r *rotation) checkLeaves(ctx context.Context, n *node, retired bool) (string, error) {
	accepted, err := r.cl.AcceptedCAs(ctx, n.name)
	if err != nil {
		return "", err
	}

	statuses, err := r.cl.CertificateStatuses(ctx, n.name)
	if err != nil {
		return "", err
	}

	var leaves []string

	for _, root := range n.roots {
		if root == RootJoinToken {
			continue // issues no leaf: checkJoinToken
		}

		rp := r.plan.Roots.Get(root)

		spec, ok := accepted[root]

		switch {
		case !ok:
			return "", fmt.Errorf("no accepted %s roots yet", root)
		case spec.IssuingFingerprint != rp.New.Fingerprint:
			return "", fmt.Errorf("%s still issues with the old %s", root, root.what())
		case retired && slices.Contains(spec.Fingerprints, rp.Old.Fingerprint):
			return "", fmt.Errorf("the old %s %s is still accepted", root, root.what())
		}

		for _, id := range slices.Sorted(maps.Keys(statuses)) {
			s := statuses[id]
			if Root(s.Root) != root {
				continue
			}

			switch {
			case s.IssuerFingerprint != rp.New.Fingerprint:
				return "", fmt.Errorf("certificate %q is not yet issued by the new %s CA", id, root)
			case !s.Trusted || s.State == pki.StateExpired || s.State == pki.StateUntrusted || s.State == pki.StatePending:
				return "", fmt.Errorf("certificate %q is %s", id, s.State)
			}

			leaves = append(leaves, id)
		}
	}

	if len(leaves) == 0 {
		return "", nil
	}

	return strings.Join(leaves, ", "), nil
}

// checkFinal: the final credentials work on the node's own address and through the endpoints.
func (r *rotation) checkFinal(ctx context.Context, n *node) (string, error) {
	if err := r.cl.Probe(ctx, n.name, *r.creds.final, true); err != nil {
		return "", fmt.Errorf("directly: %w", err)
	}

	if err := r.cl.Probe(ctx, n.name, *r.creds.final, false); err != nil {
		return "", fmt.Errorf("through the endpoints: %w", err)
	}

	return "", nil
}

// waitNodes polls check on each node until it passes or WaitTimeout runs out.
func (r *rotation) waitNodes(ctx context.Context, nodes []*node, check func(context.Context, *node) (string, error)) error {
	return r.eachNode(ctx, nodes, func(ctx context.Context, n *node) (string, error) {
		return poll(ctx, r.opts.WaitTimeout, func() (string, error) { return check(ctx, n) })
	})
}

// eachNode runs fn on the nodes (Concurrency at once) and prints a line per node as it finishes.
func (r *rotation) eachNode(ctx context.Context, nodes []*node, fn func(context.Context, *node) (string, error)) error {
	return forEach(ctx, r.opts.Concurrency, len(nodes), func(ctx context.Context, i int) error {
		n := nodes[i]

		detail, err := fn(ctx, n)
		if err != nil {
			r.out.node(n.name, "FAILED: "+err.Error())

			return fmt.Errorf("%s: %w", n.name, err)
		}

		if detail == "" {
			r.out.node(n.name, "OK")
		} else {
			r.out.node(n.name, "OK ("+detail+")")
		}

		return nil
	})
}

// forEach runs fn for 0..count-1, at most limit at once, and joins the errors.
func forEach(ctx context.Context, limit, count int, fn func(context.Context, int) error) error {
	sem := make(chan struct{}, limit)
	errs := make([]error, count)

	var wg sync.WaitGroup

	for i := range count {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()

			return ctx.Err()
		}

		wg.Go(func() {
			defer func() { <-sem }()

			errs[i] = fn(ctx, i)
		})
	}

	wg.Wait()

	return errors.Join(errs...)
}

// poll calls fn every pollInterval until it succeeds; after timeout it returns the last error. fn
// runs under ctx, not the retry's own deadline, so that a check in flight is not cut short and
// reported as a timeout of its own.
func poll(ctx context.Context, timeout time.Duration, fn func() (string, error)) (string, error) {
	var (
		detail  string
		lastErr error
	)

	err := retry.Constant(timeout, retry.WithUnits(pollInterval)).RetryWithContext(ctx, func(context.Context) error {
		detail, lastErr = fn()

		return retry.ExpectedError(lastErr)
	})

	switch {
	case err == nil:
		return detail, nil
	case ctx.Err() != nil:
		return "", ctx.Err()
	default:
		return "", fmt.Errorf("not done after %s: %w", timeout, lastErr)
	}
}

// retryUnavailable repeats fn while the node is unavailable, for up to applyRetryTimeout; any
// other outcome, and the last one after that, is fn's own.
func retryUnavailable(ctx context.Context, fn func() (string, error)) (string, error) {
	var (
		detail  string
		lastErr error
	)

	err := retry.Constant(applyRetryTimeout, retry.WithUnits(applyRetryInterval)).RetryWithContext(ctx, func(context.Context) error {
		detail, lastErr = fn()
		if status.Code(lastErr) == codes.Unavailable {
			return retry.ExpectedError(lastErr)
		}

		return nil
	})
	if err != nil && ctx.Err() != nil {
		return "", ctx.Err()
	}

	return detail, lastErr
}
