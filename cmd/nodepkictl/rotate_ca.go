package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/nodepki/nodepki/pkg/rotate"
)

func init() {
	rootCmd.AddCommand(newRotateCACmd())
}

// rootFlag is the flag that selects a root.
type rootFlag struct {
	root  rotate.Root
	usage string
}

var rootFlags = []rootFlag{
	{rotate.RootOS, "rotate the OS (node API) CA: machine.ca, machine.acceptedCAs"},
	{rotate.RootKubernetes, "rotate the Kubernetes CA: cluster.ca, cluster.acceptedCAs"},
	{rotate.RootEtcd, "rotate the etcd CA: cluster.etcd.ca, cluster.etcd.acceptedCAs"},
	{rotate.RootAggregator, "rotate the aggregator (front-proxy) CA: cluster.aggregatorCA, cluster.acceptedAggregatorCAs"},
	{rotate.RootServiceAccount, "rotate the service-account signing key: cluster.serviceAccount, cluster.acceptedServiceAccountKeys"},
	{rotate.RootJoinToken, "rotate the trustd join token: machine.token, machine.acceptedTokens (alone, it rotates no CA)"},
}

func newRotateCACmd() *cobra.Command {
	var (
		dryRun         bool
		force          bool
		planPath       string
		secrets        string
		output         string
		maxSkew        time.Duration
		waitTimeout    time.Duration
		clientGrace    time.Duration
		etcdClient     string
		kubeconfigPath string
		roots          = make([]bool, len(rootFlags))
	)

	cmd := &cobra.Command{
		Use:   "rotate-ca [--dry-run=false] [--os] [--kubernetes] [--etcd] [--aggregator] [--service-account] [--join-token]",
		Short: "Rotate CAs (and the service-account key and join token) across every node of the cluster",
		Long: `Replace one or more roots of trust on every node, without downtime:

  preflight  every node reachable (through the endpoints and on its own address), clocks within
             --max-clock-skew, no expired or untrusted certificate, configs consistent
  plan       new CAs generated and written to the plan file (mode 0600) before any node is touched
  accept     the new CA is added to every node's accepted CAs (control planes first), and every
             node is checked to accept a client certificate from it
  switch     the new CA becomes the issuing one (the old stays accepted; workers get the
             certificate only), until every node's leaves are issued by it and trusted
  retire     the old CA is removed, and every node is checked to refuse it
  output     talosconfig, --kubeconfig, --with-secrets secrets.yaml, plan marked complete

Without a root flag, --os and --kubernetes are rotated (as talosctl does); any root flag selects
only what it names. --os is the node API
(Talos API) CA: the talosconfig is then updated in place, atomically, at the moments it must change:
transitional (trusting the old and new CA, with a client certificate of the new CA) once every node
accepts the new CA, final (new CA only) once every node serves a certificate of the new CA. A client
that reads the talosconfig before each call never sees a failed call.

--join-token rotates the trustd join token (machine.token), which workers present to obtain their
node API certificate, in the same steps: accept adds the new token to machine.acceptedTokens of
every control plane (a nodepki extension) and checks that each one's trustd (port 50001) accepts
it; switch makes it machine.token on the control planes, then on the workers (live, no restart;
the old token stays accepted meanwhile); retire removes the old token and checks that every trustd
refuses it. Workers keep their certificates throughout and renew with the new token. Tokens are
never printed: patches show them as ******. --with-secrets updates trustdinfo.token.

The nodes are --nodes when given. Otherwise they are discovered through the control plane: each
endpoint lists the cluster members it knows (itself, and every worker its trustd signed a node API
certificate for: nodepkictl get members), and the union is rotated. Members not seen for 48 h (a
running worker renews every ~16 h) are left out and reported: pass --nodes to include them. Every
endpoint must answer. If no member is found (nodes of an older version record none), the nodes of
the talosconfig context are used. Calls go through the endpoints; each node is also dialed on its
own address (port 50000) to verify it.

When a control plane runs kube-apiserver (nodepkid --kube-apiserver-binary), every step of a
rotation of the Kubernetes, aggregator, service-account or etcd root is also verified through each
kube-apiserver: /readyz and a SelfSubjectReview with admin credentials (of the new Kubernetes CA when
it is rotated), a requestheader request with a front-proxy-client certificate of the new aggregator
CA, the service-account keys it publishes (/openid/v1/jwks); once retired, certificates of the old
CAs are refused. A rotation is refused while any kube-apiserver is unhealthy, unless --force.
--kubeconfig FILE keeps that kubeconfig's entries of this cluster usable throughout (transitional:
both Kubernetes CAs trusted, admin certificate of the new CA; final at the end); without it,
rotate-ca ends by printing the "nodepkictl kubeconfig" command that fetches a new admin kubeconfig.

Every step is derived from the nodes' configs, so an interrupted rotation is resumed by running the
same command again: the plan file is loaded (no second CA is ever generated) and only the nodes that
are behind get a patch; after Ctrl-C, rerun the same command. A complete plan is never reused:
rerunning its rotation says when it finished, a rotation of other roots with it is refused; pass a
new --plan to rotate again. To rotate to a CA of your own, write a plan with roots.<root>.new.crt
and .key (see docs/rotation.md).

--dry-run is the default: it prints the plan and every patch it would apply, and changes nothing.`,
		Example: `  # preview, then rotate the OS and Kubernetes CAs of the current context's nodes
  nodepkictl rotate-ca
  nodepkictl rotate-ca --dry-run=false

  # rotate the etcd CA only, updating secrets.yaml (a backup is kept); with etcd running on the
  # control planes each trust change restarts the members one at a time (see docs/etcd.md)
  nodepkictl rotate-ca --etcd --with-secrets secrets.yaml --etcd-client-dir ./etcd-client --dry-run=false

  # rotate the Kubernetes CA, keeping this cluster's context of ~/.kube/config usable throughout
  nodepkictl rotate-ca --kubernetes --kubeconfig ~/.kube/config --dry-run=false

  # rotate the join token only (a leaked machine.token), keeping secrets.yaml in step
  nodepkictl rotate-ca --join-token --with-secrets secrets.yaml --dry-run=false

  # see which nodes discovery finds (what rotate-ca rotates without --nodes)
  nodepkictl get members

  # everything, on explicit nodes, with the plan somewhere else
  nodepkictl -n 10.5.0.2,10.5.0.3,10.5.0.4 rotate-ca --os --kubernetes --etcd --aggregator \
      --service-account --plan /secure/rotate-plan.yaml --dry-run=false`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			selected, err := selectRoots(cmd, roots)
			if err != nil {
				return err
			}

			return runRotateCA(cmd, rotateCAInput{
				roots: selected, dryRun: dryRun, force: force, plan: planPath, secrets: secrets, output: output,
				maxSkew: maxSkew, waitTimeout: waitTimeout, clientGrace: clientGrace, etcdClientDir: etcdClient,
				kubeconfig: kubeconfigPath,
			})
		},
	}

	flags := cmd.Flags()
	flags.BoolVar(&dryRun, "dry-run", true, "print the plan and the patches, change nothing; --dry-run=false rotates")

	for i, rf := range rootFlags {
		flags.BoolVar(&roots[i], string(rf.root), false, rf.usage)
	}

	flags.StringVar(&planPath, "plan", "", "rotation plan file (default: "+rotate.DefaultPlanName+" beside the talosconfig)")
	flags.StringVar(&secrets, "with-secrets", "", "secrets.yaml to update with the new roots at the end (a timestamped backup is kept)")
	flags.StringVarP(&output, "output", "o", "", "talosconfig to keep up to date (default: the talosconfig in use, updated in place)")
	flags.BoolVar(&force, "force", false,
		"rotate despite preflight problems (clock skew, expired certificates, inconsistent configs, an unhealthy kube-apiserver)")
	flags.DurationVar(&maxSkew, "max-clock-skew", rotate.DefaultMaxClockSkew, "largest accepted difference between a node's clock and this machine's")
	flags.DurationVar(&waitTimeout, "wait-timeout", rotate.DefaultWaitTimeout, "how long to wait for the nodes to converge at each step")
	flags.DurationVar(&clientGrace, "client-grace", rotate.DefaultClientGrace,
		"pause between writing the transitional talosconfig and switching the issuing CA, for clients to pick it up")
	flags.StringVar(&etcdClient, "etcd-client-dir", "",
		"with --etcd: directory whose ca.crt, client.crt and client.key are kept usable for an outside etcd client (transitional, then final)")
	flags.StringVar(&kubeconfigPath, "kubeconfig", "",
		"with --kubernetes: kubeconfig whose entries of this cluster are kept usable (transitional, then final); other entries are left alone")

	return cmd
}

// selectRoots returns the roots of the root flags (chosen, in rootFlags order): those set, else the
// default roots when no root flag was given at all. --join-token alone thus rotates the token only.
func selectRoots(cmd *cobra.Command, chosen []bool) ([]rotate.Root, error) {
	var selected []rotate.Root

	for i, rf := range rootFlags {
		if chosen[i] {
			selected = append(selected, rf.root)
		}
	}

	if len(selected) > 0 {
		return selected, nil
	}

	if slices.ContainsFunc(rootFlags, func(rf rootFlag) bool { return cmd.Flags().Changed(string(rf.root)) }) {
		return nil, errors.New("every root flag is false: choose at least one of --os, --kubernetes, --etcd, --aggregator, --service-account, --join-token")
	}

	return rotate.DefaultRoots, nil
}

type rotateCAInput struct {
	roots                             []rotate.Root
	dryRun, force                     bool
	plan, secrets, output             string
	etcdClientDir, kubeconfig         string
	maxSkew, waitTimeout, clientGrace time.Duration
}

func runRotateCA(cmd *cobra.Command, in rotateCAInput) error {
	path, contextName, cctx, err := openContext(cmd)
	if err != nil {
		return err
	}

	overrides := readClientOverrides(cmd)

	endpoints := cctx.Endpoints
	if len(overrides.endpoints) > 0 {
		endpoints = overrides.endpoints
	}

	if len(endpoints) == 0 {
		return fmt.Errorf("context %q in %s has no endpoints: pass --endpoints or set them with `nodepkictl config endpoint HOST...`", contextName, path)
	}

	output := in.output
	if output == "" {
		output = path
	}

	planPath := in.plan
	if planPath == "" {
		planPath = filepath.Join(filepath.Dir(output), rotate.DefaultPlanName)
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	api := rotate.NewNodeAPI(rotate.NodeAPIOptions{Endpoints: endpoints})
	defer api.Close()

	err = rotate.Run(ctx, api, rotate.Options{
		Roots:           in.roots,
		Nodes:           trimAll(overrides.nodes),
		FallbackNodes:   trimAll(cctx.Nodes),
		Endpoints:       endpoints,
		DryRun:          in.dryRun,
		Force:           in.force,
		PlanPath:        planPath,
		TalosconfigPath: output,
		ContextName:     contextName,
		Context:         cctx,
		SecretsPath:     in.secrets,
		Out:             cmd.OutOrStdout(),
		MaxClockSkew:    in.maxSkew,
		WaitTimeout:     in.waitTimeout,
		ClientGrace:     in.clientGrace,
		EtcdClientDir:   in.etcdClientDir,
		KubeconfigPath:  in.kubeconfig,
	})
	if err != nil && ctx.Err() != nil {
		return interrupted(in.dryRun, planPath)
	}

	if err != nil {
		return fmt.Errorf("rotate-ca: %w", err)
	}

	return nil
}

// interrupted is the error of a rotation stopped by Ctrl-C (or SIGTERM): every step is derived
// from the nodes' configs and the plan, so the same command picks up where this one stopped.
func interrupted(dryRun bool, planPath string) error {
	if dryRun {
		return errors.New("rotate-ca interrupted (dry run: nothing was changed)")
	}

	return fmt.Errorf("rotate-ca interrupted: nothing is lost; rerun the same command to resume (the plan, once written, is %s)", planPath)
}

func trimAll(values []string) []string {
	out := make([]string, 0, len(values))
	for _, v := range values {
		out = append(out, strings.TrimSpace(v))
	}

	return out
}
