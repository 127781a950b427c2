// Package rotate owns CA rotation across a cluster (nodepkictl rotate-ca): the rotation plan
// file, the derivation of each node's progress from its machine config, the strategic merge
// patches of each step, and the orchestration that takes every node from the old roots to the
// new ones (preflight, accept, switch, retire), verifying each step and keeping the talosconfig
// and secrets.yaml usable at every moment.
//
// Every step is derived from what the nodes' configs say, never from memory: a rerun after a
// crash loads the same plan (the new CAs are never generated twice) and continues from there.
package rotate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// Steps of a rotation, printed as "> STEP: ..." when each starts; a step has completed (and been
// verified) when the next one starts.
const (
	StepPreflight = "preflight"
	StepPlan      = "plan"
	StepAccept    = "accept"
	StepSwitch    = "switch"
	StepRetire    = "retire"
	StepOutput    = "output"
)

// Steps lists the steps in order.
var Steps = []string{StepPreflight, StepPlan, StepAccept, StepSwitch, StepRetire, StepOutput}

// Defaults of Options.
const (
	DefaultMaxClockSkew = 30 * time.Second
	DefaultWaitTimeout  = 3 * time.Minute
	DefaultClientGrace  = 250 * time.Millisecond
	DefaultConcurrency  = 16
	// DefaultKubeSettle is how long every kube-apiserver must answer /readyz without a failure
	// before the next control plane of an etcd rotation is patched. kube-apiserver probes etcd at
	// most once a second and answers the last result in between, and its etcd client reconnects
	// to a restarted member with a backoff: it can report its etcd unready seconds after the
	// member is back, having answered ready first.
	DefaultKubeSettle = 3 * time.Second
	// applyRetryTimeout bounds the retries of a patch on a node that is briefly unavailable.
	applyRetryTimeout  = 10 * time.Second
	applyRetryInterval = 100 * time.Millisecond
	// pollInterval paces the checks that wait for nodes to reach a phase.
	pollInterval = 100 * time.Millisecond
)

// Options configure a rotation.
type Options struct {
	// Roots to rotate; empty means DefaultRoots.
	Roots []Root
	// Nodes are every node of the cluster, addressed through the endpoints. When empty, they are
	// discovered: the members the control planes behind the endpoints know (Cluster.Members),
	// without those not seen for MemberStaleAfter, else FallbackNodes.
	Nodes []string
	// FallbackNodes are the nodes when Nodes is empty and discovery finds no member (the
	// talosconfig context's nodes).
	FallbackNodes []string
	// MemberStaleAfter is the age past which a discovered member is left out (default
	// DefaultMemberStaleAfter).
	MemberStaleAfter time.Duration
	// KubeconfigPath, when rotating the Kubernetes CA, is a kubeconfig whose entries of this
	// cluster are kept usable: transitional credentials after the accept step, final ones at the
	// end; other entries are left alone. A missing file is created.
	KubeconfigPath string
	// EtcdClientDir, when rotating etcd, receives ca.crt, client.crt and client.key for an outside
	// etcd client: transitional credentials after the accept step, final ones after the switch.
	EtcdClientDir string
	// Endpoints are the endpoints the Cluster calls through: discovery asks each of them.
	Endpoints []string
	// DryRun prints the plan and every patch, and changes nothing (no plan file either).
	DryRun bool
	// Force goes on despite preflight problems that do not make the rotation impossible.
	Force bool
	// PlanPath is the plan file.
	PlanPath string
	// TalosconfigPath is the talosconfig kept up to date during an os rotation, in place.
	TalosconfigPath string
	// ContextName names the context whose credentials are rotated; Context is that context as
	// loaded (its credentials are the current ones).
	ContextName string
	Context     *clientconfig.Context
	// SecretsPath, when set, is the secrets.yaml to update at the end (a backup is kept).
	SecretsPath string
	// Out receives the progress; nil discards it.
	Out io.Writer
	// MaxClockSkew bounds the difference between a node's clock and the local one.
	MaxClockSkew time.Duration
	// WaitTimeout bounds each wait for the nodes to converge.
	WaitTimeout time.Duration
	// ClientGrace is the pause after the transitional talosconfig is written and before the
	// issuing CA changes, so that clients that read the talosconfig just before pick it up.
	ClientGrace time.Duration
	// Concurrency bounds the nodes handled at once.
	Concurrency int
	// KubeSettle is DefaultKubeSettle unless set.
	KubeSettle time.Duration
	// Now overrides time.Now.
	Now func() time.Time
}

func (o *Options) setDefaults() error {
	if len(o.Roots) == 0 {
		o.Roots = DefaultRoots
	}

	o.Roots = sortRoots(o.Roots)

	if err := checkNodeList(o.Nodes); err != nil {
		return err
	}

	if len(o.Nodes) == 0 && len(o.Endpoints) == 0 {
		return errors.New("no nodes and no endpoints to discover them through: pass --endpoints, or list every node with --nodes")
	}

	if o.MemberStaleAfter == 0 {
		o.MemberStaleAfter = DefaultMemberStaleAfter
	}

	if o.PlanPath == "" {
		return errors.New("no plan file path")
	}

	if o.Context == nil {
		return errors.New("no talosconfig context")
	}

	if o.KubeconfigPath != "" {
		if !slices.Contains(o.Roots, RootKubernetes) {
			return fmt.Errorf("--kubeconfig keeps a kubeconfig usable through a Kubernetes CA rotation, and %s does not rotate it: add --kubernetes, or drop --kubeconfig",
				rootNames(o.Roots))
		}

		if err := checkKubeconfigFile(o.KubeconfigPath); err != nil {
			return err
		}
	}

	if o.Out == nil {
		o.Out = io.Discard
	}

	if o.MaxClockSkew == 0 {
		o.MaxClockSkew = DefaultMaxClockSkew
	}

	if o.WaitTimeout == 0 {
		o.WaitTimeout = DefaultWaitTimeout
	}

	if o.ClientGrace == 0 {
		o.ClientGrace = DefaultClientGrace
	}

	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}

	if o.KubeSettle <= 0 {
		o.KubeSettle = DefaultKubeSettle
	}

	if o.Now == nil {
		o.Now = time.Now
	}

	return nil
}

// Run rotates the roots of opts on every node of the cluster, or with DryRun prints what it
// would do. Progress goes to opts.Out.
func Run(ctx context.Context, cl Cluster, opts Options) error {
	if err := opts.setDefaults(); err != nil {
		return err
	}

	if err := checkTrustdCluster(cl, opts.Roots); err != nil {
		return err
	}

	r := &rotation{cl: cl, opts: opts, out: &printer{w: opts.Out}}

	return r.run(ctx)
}

type rotation struct {
	cl    Cluster
	opts  Options
	out   *printer
	plan  *Plan
	creds credentialSet
	nodes []*node
	// planChanged is set when the plan is new or was filled in and must be saved.
	planChanged bool
	// memberTypes are the machine types of the members the endpoints record, for a new plan.
	memberTypes map[string]string
	// kube is what preflight found of the kube-apiservers, nil when the rotation does not touch them.
	kube *kubeState
}

// node is one node of the rotation.
type node struct {
	name         string
	controlPlane bool
	// cfg is the config read in preflight.
	cfg *machineconfig.Config
	// roots are the roots the node takes part in (its config has them).
	roots []Root
	// phases is each root's phase in cfg.
	phases map[Root]Phase
}

func (r *rotation) run(ctx context.Context) error {
	current, err := CredentialsFromContext("current", r.opts.Context)
	if err != nil {
		return fmt.Errorf("talosconfig context %q: %w", r.opts.ContextName, err)
	}

	r.creds.current = current

	nodes := "discovered through the endpoints"
	if len(r.opts.Nodes) > 0 {
		nodes = strings.Join(r.opts.Nodes, ", ")
	}

	r.out.printf("rotating %s of context %q (endpoints %s; nodes %s)%s\n", rootNames(r.opts.Roots), r.opts.ContextName,
		strings.Join(r.opts.Endpoints, ", "), nodes, dryRunSuffix(r.opts.DryRun))

	done, err := r.loadPlan()
	if err != nil || done {
		return err
	}

	if err = r.resolveNodes(ctx); err != nil {
		return err
	}

	if err = r.collectMembers(ctx); err != nil {
		return err
	}

	if err = r.preflight(ctx); err != nil {
		return err
	}

	if err = r.writePlan(); err != nil {
		return err
	}

	if r.opts.DryRun {
		return r.dryRun()
	}

	for _, step := range []func(context.Context) error{r.accept, r.switchCA, r.retire, r.output} {
		if err = step(ctx); err != nil {
			return err
		}
	}

	return nil
}

func dryRunSuffix(dryRun bool) string {
	if dryRun {
		return " [dry run: nothing will be changed]"
	}

	return ""
}

// loadPlan reads an existing plan; done is true when it is complete (nothing left to do).
func (r *rotation) loadPlan() (done bool, err error) {
	exists, err := planExists(r.opts.PlanPath)
	if err != nil || !exists {
		return false, err
	}

	plan, err := LoadPlan(r.opts.PlanPath)
	if err != nil {
		return false, fmt.Errorf("%w (a damaged plan is never overwritten: fix it, or move it away to start a new rotation)", err)
	}

	if plan.Completed != nil {
		finished := plan.Completed.UTC().Format(time.RFC3339)

		// A completed plan never stands for a rotation it did not do.
		if !plan.sameRoots(r.opts.Roots) {
			return false, fmt.Errorf("the plan %s is a completed rotation of %s (finished %s), not of %s: "+
				"to start a new rotation, pass a new --plan FILE (or move %s away) and rerun",
				r.opts.PlanPath, rootNames(plan.Roots.List()), finished, rootNames(r.opts.Roots), r.opts.PlanPath)
		}

		r.out.printf("the rotation of %s in %s is complete (finished %s): nothing to do.\n"+
			"To rotate again, pass a new --plan FILE (or move %s away) and rerun.\n",
			rootNames(plan.Roots.List()), r.opts.PlanPath, finished, r.opts.PlanPath)

		return true, nil
	}

	if !plan.sameRoots(r.opts.Roots) {
		return false, fmt.Errorf("the plan %s rotates %s, but this command asks for %s: rerun with the plan's roots to finish it, "+
			"or pass another --plan to start a different rotation", r.opts.PlanPath, rootNames(plan.Roots.List()), rootNames(r.opts.Roots))
	}

	r.plan = plan

	if err = r.setPlanCredentials(); err != nil {
		return false, err
	}

	return false, nil
}

// setPlanCredentials derives the transitional and final credentials from the plan (os rotations).
func (r *rotation) setPlanCredentials() error {
	rp := r.plan.Roots.OS
	if rp == nil || r.plan.Client == nil || len(rp.Old.Crt) == 0 {
		return nil
	}

	bundle := append(append([]byte{}, rp.Old.Crt...), rp.New.Crt...)
	r.creds.transitional = &Credentials{Name: "transitional", CA: bundle, Crt: r.plan.Client.Crt, Key: r.plan.Client.Key}
	r.creds.final = &Credentials{Name: "final", CA: rp.New.Crt, Crt: r.plan.Client.Crt, Key: r.plan.Client.Key}

	roles, err := r.creds.current.roles()
	if err != nil {
		return fmt.Errorf("talosconfig context %q: %w", r.opts.ContextName, err)
	}

	r.creds.oldCA, err = oldCAClient(rp, roles, rp.New.Crt, r.opts.Now())

	return err
}

// writePlan saves a new or filled-in plan before any node is touched and prints it.
func (r *rotation) writePlan() error {
	r.out.step(StepPlan, "new roots, recorded before any node is touched")

	for _, root := range r.plan.Roots.List() {
		rp := r.plan.Roots.Get(root)
		r.out.printf("  %s: %s (%s)\n", root, rp.change(root), r.phaseSummary(root))
	}

	switch {
	case r.opts.DryRun && r.planChanged:
		r.out.printf("  plan not written (dry run): a real run records new CAs in %s\n", r.opts.PlanPath)
	case r.planChanged:
		if err := r.plan.Save(r.opts.PlanPath); err != nil {
			return err
		}

		r.out.printf("  plan written to %s (mode 0600, holds private keys): a rerun resumes from it\n", r.opts.PlanPath)
	default:
		r.out.printf("  plan loaded from %s: resuming\n", r.opts.PlanPath)
	}

	return nil
}

// phaseSummary counts the nodes of each phase of a root, e.g. "1 switched, 2 accepted".
func (r *rotation) phaseSummary(root Root) string {
	counts := map[Phase]int{}

	for _, n := range r.nodes {
		if p, ok := n.phases[root]; ok {
			counts[p]++
		}
	}

	var parts []string

	for p := PhaseRetired; p >= PhaseInitial; p-- {
		if counts[p] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[p], p))
		}
	}

	return "nodes: " + strings.Join(parts, ", ")
}

// controlPlanes and workers split the nodes, keeping their order.
func (r *rotation) controlPlanes() []*node {
	return slices.DeleteFunc(slices.Clone(r.nodes), func(n *node) bool { return !n.controlPlane })
}

func (r *rotation) workers() []*node {
	return slices.DeleteFunc(slices.Clone(r.nodes), func(n *node) bool { return n.controlPlane })
}

// rotatesOS reports whether the os root (the node API CA) is rotated.
func (r *rotation) rotatesOS() bool {
	return r.plan.Roots.OS != nil
}

// printer serializes progress lines from concurrent node workers.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()

	fmt.Fprintf(p.w, format, args...)
}

func (p *printer) step(name, what string) {
	p.printf("> %s: %s\n", name, what)
}

// noPatch is how a dry run and a real run both say that a node is already at a step's phase.
func noPatch(target Phase) string {
	return "already " + target.String() + ", no patch"
}

func (p *printer) node(name, result string) {
	p.printf("- %s: %s\n", name, result)
}
