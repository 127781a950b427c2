package rotate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// adminRole is the role rotate-ca needs: it reads and patches machine configs.
const adminRole = "os:admin"

// inspection is what preflight learned about one node.
type inspection struct {
	node *node
	// fatal problems make the rotation impossible; problems are refused unless --force.
	fatal    []string
	problems []string
	notes    []string
}

// preflight reads every node, builds (or completes) the plan and checks that the rotation can
// go ahead: every node reachable directly and through the endpoints, clocks within the bound, no
// expired or untrusted certificate, configs consistent with each other and with the plan, and
// every patch of every step producing a valid config.
func (r *rotation) preflight(ctx context.Context) error {
	r.out.step(StepPreflight, "every node reachable, clocks in step, certificates valid, configs consistent")

	if err := r.cl.UseCredentials(ctx, r.creds.operational()); err != nil {
		return err
	}

	inspections := make([]*inspection, len(r.opts.Nodes))

	err := forEach(ctx, r.opts.Concurrency, len(r.opts.Nodes), func(ctx context.Context, i int) error {
		inspections[i] = r.inspect(ctx, r.opts.Nodes[i])

		return nil
	})
	if err != nil {
		return err
	}

	var clusterFatal, clusterProblems []string

	for _, in := range inspections {
		if in.node != nil {
			r.nodes = append(r.nodes, in.node)
		}
	}

	if len(r.nodes) == len(inspections) {
		clusterFatal, clusterProblems = r.checkCluster(inspections)
	}

	if len(clusterFatal) == 0 && r.plan != nil {
		kubeProblems, err := r.kubePreflight(ctx)
		if err != nil {
			clusterFatal = append(clusterFatal, err.Error())
		}

		clusterProblems = append(clusterProblems, kubeProblems...)
	}

	fatal, problems := r.report(inspections, clusterFatal, clusterProblems)

	if fatal > 0 {
		return fmt.Errorf("preflight: %d node(s) or check(s) make the rotation impossible (see above); nothing was changed", fatal)
	}

	if problems > 0 {
		if !r.opts.Force {
			return fmt.Errorf("preflight found %d problem(s) (see above); nothing was changed: fix them, or rerun with --force to rotate anyway", problems)
		}

		r.out.printf("  going on despite %d problem(s): --force\n", problems)
	}

	return nil
}

// inspect reads one node; a node that cannot be read is returned without node.
func (r *rotation) inspect(ctx context.Context, name string) *inspection {
	in := &inspection{}

	version, err := r.cl.Version(ctx, name)
	if err != nil {
		in.fatal = append(in.fatal, fmt.Sprintf("unreachable through the endpoints: %v", err))

		return in
	}

	raw, err := r.cl.MachineConfig(ctx, name)
	if err != nil {
		in.fatal = append(in.fatal, fmt.Sprintf("cannot read the machine config (rotate-ca needs %s): %v", adminRole, err))

		return in
	}

	cfg, err := machineconfig.Parse(raw)
	if err != nil {
		in.fatal = append(in.fatal, fmt.Sprintf("the machine config cannot be parsed: %v", err))

		return in
	}

	n := &node{name: name, controlPlane: cfg.IsControlPlane(), cfg: cfg, phases: map[Root]Phase{}}
	in.node = n

	in.notes = append(in.notes, version.MachineType)
	r.checkClock(in, version)
	r.checkCertificates(ctx, in)
	r.inspectTrustd(ctx, in)

	if err = r.probeAny(ctx, name, r.creds.operational()); err != nil {
		in.fatal = append(in.fatal, fmt.Sprintf("cannot be reached directly (rotate-ca verifies each node on its own address): %v", err))
	}

	return in
}

func (r *rotation) checkClock(in *inspection, v NodeVersion) {
	if v.Clock.IsZero() {
		in.notes = append(in.notes, "clock not reported")

		return
	}

	skew := v.Clock.Sub(v.Local)
	margin := v.RoundTrip / 2

	if abs(skew) > r.opts.MaxClockSkew+margin {
		in.problems = append(in.problems, fmt.Sprintf("clock is %s off the local clock (bound %s): new certificates may not be valid there yet; fix the node's time",
			skew.Round(time.Millisecond), r.opts.MaxClockSkew))

		return
	}

	in.notes = append(in.notes, "clock "+formatSkew(skew))
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}

	return d
}

func formatSkew(d time.Duration) string {
	sign := "+"
	if d < 0 {
		sign = "-"
	}

	return sign + abs(d).Round(time.Millisecond).String()
}

// checkCertificates refuses expired, untrusted and missing leaf certificates: the rotation waits
// for leaves to be reissued and trusted, which a broken one never is.
func (r *rotation) checkCertificates(ctx context.Context, in *inspection) {
	statuses, err := r.cl.CertificateStatuses(ctx, in.node.name)
	if err != nil {
		in.fatal = append(in.fatal, fmt.Sprintf("cannot read certificate statuses: %v", err))

		return
	}

	for _, id := range slices.Sorted(maps.Keys(statuses)) {
		s := statuses[id]

		switch s.State {
		case pki.StateExpired:
			in.problems = append(in.problems, fmt.Sprintf("certificate %q is expired (not after %s)", id, s.NotAfter))
		case pki.StateUntrusted:
			in.problems = append(in.problems, fmt.Sprintf("certificate %q is not trusted by the node's accepted %s CAs", id, s.Root))
		case pki.StatePending:
			in.problems = append(in.problems, fmt.Sprintf("certificate %q is not issued: %s", id, s.LastError))
		}
	}
}

// probeAny succeeds when any of the credentials gets an answer from the node on its own address.
func (r *rotation) probeAny(ctx context.Context, name string, creds []Credentials) error {
	var errs []error

	for _, c := range creds {
		err := r.cl.Probe(ctx, name, c, true)
		if err == nil {
			return nil
		}

		errs = append(errs, fmt.Errorf("with the %s credentials: %w", c.Name, err))
	}

	return errors.Join(errs...)
}

// checkCluster completes the plan and checks the nodes against it and against each other.
func (r *rotation) checkCluster(inspections []*inspection) (fatal, problems []string) {
	byNode := map[*node]*inspection{}
	for _, in := range inspections {
		byNode[in.node] = in
	}

	roles, err := r.creds.current.roles()

	switch {
	case err != nil:
		fatal = append(fatal, fmt.Sprintf("talosconfig context %q: %v", r.opts.ContextName, err))
	case !slices.Contains(roles, adminRole):
		fatal = append(fatal, fmt.Sprintf("the talosconfig's client certificate has roles [%s]; rotate-ca reads and patches machine configs and needs %s",
			strings.Join(roles, ", "), adminRole))
	}

	if len(r.controlPlanes()) == 0 {
		return append(fatal, "no control-plane node in the node list: list every node of the cluster (control planes and workers)"), nil
	}

	if len(fatal) > 0 {
		return fatal, nil
	}

	if err = r.completePlan(roles); err != nil {
		return append(fatal, err.Error()), nil
	}

	derived := true

	for _, n := range r.nodes {
		for _, root := range r.plan.Roots.List() {
			if err := r.derive(n, root); err != nil {
				byNode[n].fatal = append(byNode[n].fatal, err.Error())
				derived = false
			}
		}
	}

	if !derived {
		return nil, nil
	}

	problems = append(problems, r.checkConsistency()...)

	if _, err := r.simulate(); err != nil {
		fatal = append(fatal, err.Error())
	}

	if r.opts.SecretsPath != "" {
		if err := checkSecrets(r.opts.SecretsPath, r.plan); err != nil {
			fatal = append(fatal, err.Error())
		}
	}

	return fatal, problems
}

// completePlan generates the plan if there is none and records the cluster's current roots in it.
func (r *rotation) completePlan(roles []string) error {
	if r.plan == nil {
		plan, err := newPlan(r.opts.Roots, r.opts.Now())
		if err != nil {
			return err
		}

		r.plan = plan
		r.planChanged = true
	}

	current := map[Root]Material{}

	// The first control plane holds every root with its key; the other nodes are checked
	// against the plan right after.
	cp := r.controlPlanes()[0]

	for _, root := range r.plan.Roots.List() {
		rc, err := readRoot(cp.cfg.Document(), root)
		if err != nil {
			return fmt.Errorf("%s: %w", cp.name, err)
		}

		if rc.present {
			current[root] = Material{Crt: rc.issuingCrt, Key: rc.issuingKey, Token: rc.issuingToken, Fingerprint: rc.issuingFingerprint}
		}
	}

	changed, err := r.plan.fill(current, roles, r.opts.Now())
	if err != nil {
		return err
	}

	r.planChanged = r.planChanged || changed
	r.recordControlPlanes()

	return r.setPlanCredentials()
}

// derive records the phase of one root on one node.
func (r *rotation) derive(n *node, root Root) error {
	rc, err := readRoot(n.cfg.Document(), root)
	if err != nil {
		return err
	}

	if !rc.present {
		if n.controlPlane {
			return fmt.Errorf("%s is missing: a control plane must hold every root it rotates", root.issuingPath())
		}

		return nil
	}

	rp := r.plan.Roots.Get(root)

	phase, err := derivePhase(root, rc, rp.Old.Fingerprint, rp.New.Fingerprint)
	if err != nil {
		return err
	}

	n.roots = append(n.roots, root)
	n.phases[root] = comparablePhase(root, rc, phase)

	return nil
}

// checkConsistency compares the nodes with each other: for each root, the accepted CAs beyond the
// rotation's own must be the same everywhere, and no node may be more than one step ahead of
// another (a rotation moves every node through a step before the next).
func (r *rotation) checkConsistency() []string {
	var problems []string

	for _, root := range r.plan.Roots.List() {
		rp := r.plan.Roots.Get(root)
		extras := map[string][]string{}

		var (
			lowest, highest = PhaseRetired, PhaseInitial
			seen            bool
		)

		for _, n := range r.nodes {
			phase, ok := n.phases[root]
			if !ok {
				continue
			}

			seen = true
			lowest, highest = min(lowest, phase), max(highest, phase)

			rc, _ := readRoot(n.cfg.Document(), root) // read without error in derive

			var other []string

			for _, e := range rc.accepted {
				for _, fp := range e.fingerprints {
					if fp != rp.Old.Fingerprint && fp != rp.New.Fingerprint {
						other = append(other, shortFingerprint(fp))
					}
				}
			}

			slices.Sort(other)
			other = slices.Compact(other)
			key := strings.Join(other, ",")
			extras[key] = append(extras[key], n.name)
		}

		if len(extras) > 1 {
			var parts []string

			for _, key := range slices.Sorted(maps.Keys(extras)) {
				list := key

				switch {
				case list == "":
					list = "none"
				case root == RootJoinToken:
					list = fmt.Sprintf("%d other token(s)", strings.Count(key, ",")+1)
				}

				parts = append(parts, fmt.Sprintf("[%s] on %s", list, strings.Join(extras[key], ", ")))
			}

			problems = append(problems, fmt.Sprintf("%s lists different other CAs on different nodes: %s", root.acceptedPath(), strings.Join(parts, "; ")))
		}

		if seen && highest-lowest > 1 {
			problems = append(problems, fmt.Sprintf("%s: nodes are %s and %s, more than one step apart: some config was changed by hand",
				root, lowest, highest))
		}
	}

	return problems
}

// report prints one line per node and per cluster check, and counts fatal problems and problems.
func (r *rotation) report(inspections []*inspection, clusterFatal, clusterProblems []string) (fatal, problems int) {
	for i, in := range inspections {
		name := r.opts.Nodes[i]

		if len(in.fatal) > 0 {
			r.out.node(name, "FAILED: "+strings.Join(in.fatal, "; "))
		}

		if len(in.problems) > 0 {
			r.out.node(name, "PROBLEM: "+strings.Join(in.problems, "; "))
		}

		if len(in.fatal)+len(in.problems) == 0 {
			r.out.node(name, "OK ("+strings.Join(in.notes, ", ")+")")
		}

		fatal += len(in.fatal)
		problems += len(in.problems)
	}

	for _, f := range clusterFatal {
		r.out.node("cluster", "FAILED: "+f)
	}

	for _, p := range clusterProblems {
		r.out.node("cluster", "PROBLEM: "+p)
	}

	return fatal + len(clusterFatal), problems + len(clusterProblems)
}
