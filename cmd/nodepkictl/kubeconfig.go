package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/tools/clientcmd"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
)

func init() {
	rootCmd.AddCommand(newKubeconfigCmd())
}

// kubeconfigFileName is the file written in a directory given as PATH, as talosctl names it.
const kubeconfigFileName = "kubeconfig"

type kubeconfigOptions struct {
	merge            bool
	force            bool
	forceContextName string
	crtTTL           time.Duration
}

func newKubeconfigCmd() *cobra.Command {
	var opts kubeconfigOptions

	cmd := &cobra.Command{
		Use:   "kubeconfig [PATH]",
		Short: "Have a control-plane node issue an admin kubeconfig, merged into your kubeconfig by default",
		Long: `Ask a control-plane node for an admin kubeconfig, as "talosctl kubeconfig" does: a client
certificate for CN admin, O system:masters, signed by the cluster's Kubernetes CA, for the cluster
named by cluster.clusterName at cluster.controlPlane.endpoint. The kubeconfig trusts every accepted
Kubernetes CA, so it keeps working through a Kubernetes CA rotation. The caller needs os:admin and
exactly one control-plane node (--nodes, or the context's node).

With --merge (the default) the kubeconfig is merged into PATH (default: the first file of
$KUBECONFIG, else ~/.kube/config): entries of the same cluster (same name and server) are updated in
place; a context, cluster or user of that name that belongs to another cluster is never
overwritten: the new one is renamed name-1, name-2, ... instead. The merged context becomes current.

With --merge=false the kubeconfig is written to PATH (default ./kubeconfig); an existing file needs
--force. A PATH that is a directory gets a file named kubeconfig in it; PATH "-" writes to stdout.
Files are written atomically with mode 0600.

The certificate lives --crt-ttl, or cluster.adminKubeconfig.certLifetime of the node's config
(one year when unset).`,
		Example: `  # merge admin credentials into ~/.kube/config (or $KUBECONFIG)
  nodepkictl -n 10.5.0.2 kubeconfig

  # a standalone file valid for one day
  nodepkictl -n 10.5.0.2 kubeconfig ./admin.kubeconfig --merge=false --crt-ttl 24h

  # print it
  nodepkictl -n 10.5.0.2 kubeconfig -`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var path string
			if len(args) == 1 {
				path = args[0]
			}

			return runKubeconfig(cmd, path, opts)
		},
	}

	cmd.Flags().BoolVarP(&opts.merge, "merge", "m", true, "merge into the existing kubeconfig at PATH instead of writing a new file")
	cmd.Flags().BoolVarP(&opts.force, "force", "f", false, "with --merge=false, overwrite an existing file at PATH")
	cmd.Flags().StringVar(&opts.forceContextName, "force-context-name", "", "name of the merged context (default admin@<cluster name>)")
	cmd.Flags().DurationVar(&opts.crtTTL, "crt-ttl", 0, "lifetime of the admin client certificate (default cluster.adminKubeconfig.certLifetime, one year when unset)")

	return cmd
}

func runKubeconfig(cmd *cobra.Command, path string, opts kubeconfigOptions) error {
	if opts.crtTTL < 0 || (opts.crtTTL > 0 && opts.crtTTL < time.Second) {
		return fmt.Errorf("--crt-ttl must be at least one second, got %s", opts.crtTTL)
	}

	if opts.forceContextName != "" && !opts.merge {
		return errors.New("--force-context-name names the merged context: it needs --merge (the default)")
	}

	toStdout := path == "-"

	path, err := kubeconfigPath(path, opts.merge)
	if err != nil {
		return err
	}

	if !toStdout && !opts.merge && !opts.force {
		if err := refuseExistingKubeconfig(path); err != nil {
			return err
		}
	}

	// A file that cannot be merged into is refused before a certificate is issued for nothing.
	if !toStdout && opts.merge {
		if _, err := readExistingKubeconfig(path); err != nil {
			return err
		}
	}

	ctx := cmd.Context()

	s, err := connect(ctx, cmd)
	if err != nil {
		return err
	}

	defer s.Close()

	t, err := s.onlyTarget("kubeconfig")
	if err != nil {
		return err
	}

	resp, err := s.client.Node().Kubeconfig(client.WithNode(ctx, t.node), &nodeapi.KubeconfigRequest{CrtTtlSeconds: int64(opts.crtTTL / time.Second)})
	if err != nil {
		return fmt.Errorf("%s: %w", t.label, err)
	}

	issued := resp.GetKubeconfig()
	if _, err := clientcmd.Load(issued); err != nil {
		return fmt.Errorf("%s: the node returned an unusable kubeconfig: %w", t.label, err)
	}

	if toStdout {
		_, err = cmd.OutOrStdout().Write(issued)

		return err
	}

	if !opts.merge {
		if err := atomicfile.WriteFile(symlinkTarget(path), issued); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}

		fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", path)

		return nil
	}

	return mergeKubeconfig(cmd, path, issued, opts.forceContextName)
}

func mergeKubeconfig(cmd *cobra.Command, path string, issued []byte, forceContextName string) error {
	existing, err := readExistingKubeconfig(path)
	if err != nil {
		return err
	}

	res, err := kubeconfig.Merge(existing, issued, kubeconfig.MergeOptions{ForceContextName: forceContextName})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}

	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating the directory of %s: %w", path, err)
	}

	if err := atomicfile.WriteFile(symlinkTarget(path), res.Data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}

	for _, r := range res.Renamed {
		fmt.Fprintf(cmd.ErrOrStderr(), "renamed %s\n", r)
	}

	fmt.Fprintf(cmd.OutOrStdout(), "merged context %q into %s; it is the current context\n", res.Context, path)

	return nil
}

// symlinkTarget is the file a symlink at path points to, so that replacing the file atomically
// keeps the link (a kubeconfig kept in a dotfiles repository, say); path itself otherwise.
func symlinkTarget(path string) string {
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		return resolved
	}

	return path
}

// readExistingKubeconfig reads the file to merge into (nil if there is none) and checks that it
// is a kubeconfig.
func readExistingKubeconfig(path string) ([]byte, error) {
	data, err := os.ReadFile(path)

	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}

	if _, err := clientcmd.Load(data); err != nil {
		return nil, fmt.Errorf("%s is not a kubeconfig that can be merged into: %w; give another PATH or --merge=false", path, err)
	}

	return data, nil
}

// kubeconfigPath resolves PATH as talosctl does: the default depends on --merge, and a
// directory gets a file named kubeconfig in it.
func kubeconfigPath(path string, merge bool) (string, error) {
	switch {
	case path == "-":
		return path, nil
	case path == "" && merge:
		return defaultKubeconfigPath()
	case path == "":
		return kubeconfigFileName, nil
	}

	if info, err := os.Stat(path); err == nil && info.IsDir() {
		return filepath.Join(path, kubeconfigFileName), nil
	}

	return path, nil
}

// defaultKubeconfigPath is kubectl's file: the first entry of $KUBECONFIG, else ~/.kube/config.
func defaultKubeconfigPath() (string, error) {
	if list := filepath.SplitList(os.Getenv(clientcmd.RecommendedConfigPathEnvVar)); len(list) > 0 && list[0] != "" {
		return list[0], nil
	}

	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no PATH given, $KUBECONFIG is unset and the home directory is unknown (%w): give PATH", err)
	}

	return filepath.Join(home, clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName), nil
}

func refuseExistingKubeconfig(path string) error {
	_, err := os.Lstat(path)

	switch {
	case err == nil:
		return fmt.Errorf("%s already exists: pass --force to overwrite it, or merge into it (--merge, the default)", path)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		return fmt.Errorf("checking %s: %w", path, err)
	}
}
