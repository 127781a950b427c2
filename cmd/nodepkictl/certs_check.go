package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/certcheck"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/rotate"
)

func init() {
	certsCmd := &cobra.Command{
		Use:   "certs",
		Short: "Inspect the certificates of a cluster",
	}
	certsCmd.AddCommand(newCertsCheckCmd())
	rootCmd.AddCommand(certsCmd)
}

// exitCodeError makes nodepkictl exit with code after printing err.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string { return e.err.Error() }
func (e *exitCodeError) Unwrap() error { return e.err }

// exitCode is the process exit code for an error Execute returned: 1 unless it says otherwise.
func exitCode(err error) int {
	var coded *exitCodeError
	if errors.As(err, &coded) {
		return coded.code
	}

	return 1
}

func usageError(err error) error {
	return &exitCodeError{code: certcheck.ExitUsage, err: err}
}

type certsCheckOptions struct {
	warn       time.Duration
	output     string
	kubeconfig string
}

func newCertsCheckCmd() *cobra.Command {
	var opts certsCheckOptions

	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check every certificate of the cluster and of this client for expiry and trust",
		Long: `Check, in one table for the whole cluster, every leaf certificate of every node
(CertificateStatuses), every CA the nodes accept (AcceptedCAs, one row per CA with the nodes that
hold it), the client certificate of the talosconfig context in use and, when a kubeconfig with a
context of this cluster exists, its client certificates.

The nodes are discovered as rotate-ca discovers them: the cluster members every endpoint's control
plane knows, unless --nodes lists them; when no member is recorded, the context's nodes.

A leaf that the nodes renew themselves is fine while its renewal is not yet due, even when it
expires within --warn; it is "expiring" when the node says so or when it expires within --warn and
its renewal is due. CAs and client certificates are "expiring" within --warn.

Exit codes (the highest that applies):
  0  every certificate is fine
  1  something expires within --warn, is expired, untrusted or not issued
  2  a node could not be reached
  3  bad flags or client configuration`,
		Example: `  nodepkictl certs check
  nodepkictl certs check --warn 2160h -o json | jq '.items[] | select(.state != "ok")'`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError(fmt.Errorf("certs check takes no arguments, got %q", args))
			}

			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCertsCheck(cmd, opts)
		},
	}

	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })

	flags := cmd.Flags()
	flags.DurationVar(&opts.warn, "warn", certcheck.DefaultWarn, "report certificates that expire within this long")
	flags.StringVarP(&opts.output, "output", "o", "table", "output format: table or json")
	flags.StringVar(&opts.kubeconfig, "kubeconfig", "",
		"kubeconfig whose client certificates of this cluster are checked (default $KUBECONFIG, else ~/.kube/config; skipped when absent)")

	return cmd
}

func runCertsCheck(cmd *cobra.Command, opts certsCheckOptions) error {
	if opts.output != "table" && opts.output != "json" {
		return usageError(fmt.Errorf("--output %q: want table or json", opts.output))
	}

	if opts.warn <= 0 {
		return usageError(fmt.Errorf("--warn must be positive, got %s", opts.warn))
	}

	path, contextName, cctx, err := openContext(cmd)
	if err != nil {
		return usageError(err)
	}

	if contextName == "" {
		contextName = "current"
	}

	creds, err := rotate.CredentialsFromContext(contextName, cctx)
	if err != nil {
		return usageError(fmt.Errorf("context %q in %s: %w", contextName, path, err))
	}

	overrides := readClientOverrides(cmd)

	endpoints := cctx.Endpoints
	if len(overrides.endpoints) > 0 {
		endpoints = overrides.endpoints
	}

	if len(endpoints) == 0 {
		return usageError(fmt.Errorf("context %q in %s has no endpoints: pass --endpoints or set them with `nodepkictl config endpoint HOST...`",
			contextName, path))
	}

	crt, err := certs.ParseCertificate(creds.Crt)
	if err != nil {
		return usageError(fmt.Errorf("context %q in %s: client certificate: %w", contextName, path, err))
	}

	clients := []certcheck.ClientCertificate{{Source: fmt.Sprintf("talosconfig %s context %q", path, contextName), Root: string(rotate.RootOS), Crt: crt}}

	kube, note, err := kubeconfigCertificates(opts.kubeconfig)
	if err != nil {
		return usageError(err)
	}

	clients = append(clients, kube...)

	api := rotate.NewNodeAPI(rotate.NodeAPIOptions{Endpoints: endpoints})
	defer api.Close()

	ctx := cmd.Context()

	if err = api.UseCredentials(ctx, []rotate.Credentials{creds}); err != nil {
		return usageError(err)
	}

	report, err := certcheck.Check(ctx, api, certcheck.Options{
		Endpoints:     endpoints,
		Nodes:         trimAll(overrides.nodes),
		FallbackNodes: trimAll(cctx.Nodes),
		Warn:          opts.warn,
		Now:           time.Now(),
		Clients:       clients,
	})
	if err != nil {
		return &exitCodeError{code: certcheck.ExitUnreachable, err: err}
	}

	if note != "" {
		report.Notes = append(report.Notes, note)
	}

	if err = writeCertsReport(cmd.OutOrStdout(), report, opts.output); err != nil {
		return err
	}

	for _, n := range report.Notes {
		fmt.Fprintln(cmd.ErrOrStderr(), "note:", n)
	}

	for _, u := range report.Unreachable {
		fmt.Fprintf(cmd.ErrOrStderr(), "unreachable: %s: %s\n", u.Node, u.Error)
	}

	return certsCheckOutcome(report)
}

func certsCheckOutcome(report *certcheck.Report) error {
	problems := 0

	for _, item := range report.Items {
		if item.Problem() {
			problems++
		}
	}

	var parts []string
	if problems > 0 {
		parts = append(parts, fmt.Sprintf("%d certificate(s) expiring, expired, untrusted or not issued", problems))
	}

	if n := len(report.Unreachable); n > 0 {
		parts = append(parts, fmt.Sprintf("%d node(s) unreachable", n))
	}

	if report.ExitCode == certcheck.ExitOK {
		return nil
	}

	return &exitCodeError{code: report.ExitCode, err: errors.New("certs check: " + strings.Join(parts, ", "))}
}

// kubeconfigCertificates returns the client certificates of the kubeconfig, each with the CA of
// its context's cluster so that only this cluster's are judged. An absent default kubeconfig is a
// note; an absent explicit one an error.
func kubeconfigCertificates(explicit string) ([]certcheck.ClientCertificate, string, error) {
	path := explicit
	if path == "" {
		path = defaultKubeconfig()
	}

	if path == "" {
		return nil, "", nil
	}

	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if explicit != "" {
			return nil, "", fmt.Errorf("--kubeconfig %s does not exist", explicit)
		}

		return nil, "no kubeconfig at " + path + ": none checked", nil
	}

	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("kubeconfig %s: %w", path, err)
	}

	var out []certcheck.ClientCertificate

	for _, name := range slices.Sorted(maps.Keys(cfg.Contexts)) {
		kctx := cfg.Contexts[name]
		user, cluster := cfg.AuthInfos[kctx.AuthInfo], cfg.Clusters[kctx.Cluster]

		if user == nil || cluster == nil {
			continue
		}

		crtPEM := user.ClientCertificateData
		if len(crtPEM) == 0 && user.ClientCertificate != "" {
			if crtPEM, err = os.ReadFile(user.ClientCertificate); err != nil {
				return nil, "", fmt.Errorf("kubeconfig %s context %q: %w", path, name, err)
			}
		}

		caPEM := cluster.CertificateAuthorityData
		if len(caPEM) == 0 && cluster.CertificateAuthority != "" {
			if caPEM, err = os.ReadFile(cluster.CertificateAuthority); err != nil {
				return nil, "", fmt.Errorf("kubeconfig %s cluster %q: %w", path, kctx.Cluster, err)
			}
		}

		if len(crtPEM) == 0 {
			continue // token or exec credentials: nothing nodepki issued
		}

		crt, err := certs.ParseCertificate(crtPEM)
		if err != nil {
			return nil, "", fmt.Errorf("kubeconfig %s context %q: client certificate: %w", path, name, err)
		}

		cas, err := certs.ParseCertificates(caPEM)
		if err != nil {
			return nil, "", fmt.Errorf("kubeconfig %s cluster %q: certificate-authority: %w", path, kctx.Cluster, err)
		}

		out = append(out, certcheck.ClientCertificate{
			Source:     fmt.Sprintf("kubeconfig %s context %q", path, name),
			Root:       string(rotate.RootKubernetes),
			Crt:        crt,
			ClusterCAs: cas,
		})
	}

	return out, "", nil
}

func defaultKubeconfig() string {
	if env := os.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		return filepath.SplitList(env)[0]
	}

	home, err := os.UserHomeDir()
	if err != nil {
		return ""
	}

	return filepath.Join(home, clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName)
}

func writeCertsReport(w io.Writer, report *certcheck.Report, output string) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")

		return enc.Encode(report)
	}

	reached := map[string]bool{}

	for _, item := range report.Items {
		if item.Kind == certcheck.KindLeaf {
			reached[item.Nodes[0]] = true
		}
	}

	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	fmt.Fprintln(tw, "NODE\tKIND\tROOT\tNAME\tNOT AFTER\tDAYS LEFT\tTRUSTED\tSTATE\tDETAIL")

	for _, item := range report.Items {
		notAfter := "-"
		if !item.NotAfter.IsZero() {
			notAfter = item.NotAfter.UTC().Format(time.RFC3339)
		}

		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%t\t%s\t%s\n",
			nodeColumn(item, len(reached)), item.Kind, item.Root, item.Name, notAfter, strconv.Itoa(item.DaysLeft),
			item.Trusted, item.State, item.Detail)
	}

	return tw.Flush()
}

// nodeColumn shortens a CA held by every node reached to "all (N)".
func nodeColumn(item certcheck.Item, reached int) string {
	switch {
	case len(item.Nodes) == 0:
		return "(client)"
	case item.Kind == certcheck.KindCA && len(item.Nodes) == reached && reached > 1:
		return fmt.Sprintf("all (%d)", reached)
	default:
		return strings.Join(item.Nodes, ",")
	}
}
