package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/cluster"
)

func init() {
	rootCmd.AddCommand(newClusterCmd())
}

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Run a local cluster of real nodepkid processes on loopback addresses",
		Long: `A local cluster is a secrets bundle, machine configs and one nodepkid process per node, listening
on 127.0.0.2, 127.0.0.3, ... Everything lives in the --state directory: talosconfig, cluster.yaml,
nodes/<name>{.yaml,.log,/} for each node, and secrets.yaml unless create was given --with-secrets.`,
	}

	cmd.PersistentFlags().String("state", defaultClusterState(), "directory holding the cluster's state")

	cmd.AddCommand(newClusterCreateCmd(), newClusterShowCmd(), newClusterDestroyCmd())

	return cmd
}

func defaultClusterState() string {
	home, err := os.UserHomeDir()
	if err != nil {
		return ".nodepki-cluster"
	}

	return filepath.Join(home, ".nodepki", "cluster")
}

func newClusterCreateCmd() *cobra.Command {
	var (
		opts       cluster.Options
		daemon     string
		secrets    string
		first      string
		withEtcd   bool
		etcdBinary string
		withKube   bool
		kubeBinary string
	)

	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create and start a local cluster",
		Long: `Create a local cluster: machine configs and a talosconfig (every control plane an endpoint) from
a new secrets bundle, or from --with-secrets FILE, then one nodepkid process per node on 127.0.0.2,
127.0.0.3, ... (--first-address and the addresses after it; control planes first). It waits
until every node's API certificate is valid.

Addresses whose ports (50000, 50001) are in use are refused before anything is written. If a node
exits while the cluster starts, its error is reported, the other nodes are stopped and nothing is
left behind.

With --etcd every control plane also runs a real etcd member on its address (:2379, :2380) with
the etcd certificates nodepki issues; the first control plane bootstraps the etcd cluster and the
others join it. The etcd binary is --etcd-binary, else etcd next to nodepkictl, else etcd on $PATH
(make tools builds it into bin/).

With --kubernetes (which implies --etcd) every control plane also runs kube-apiserver on its address
(:6443) against its own etcd member, on the Kubernetes certificates nodepki issues. create waits
until every kube-apiserver is ready and writes an admin kubeconfig (CN admin, O system:masters) to
<state>/kubeconfig, next to the talosconfig. The kube-apiserver binary is --kube-apiserver-binary,
else kube-apiserver next to nodepkictl, else on $PATH (make tools-kubernetes builds it into bin/; the
first build takes several minutes). Each kube-apiserver logs to nodes/<name>/kube-apiserver.log.`,
		Example: `  nodepkictl cluster create --workers 2
  nodepkictl cluster create --name demo --controlplanes 1 --workers 2 --state ./_out/cluster
  nodepkictl cluster create --controlplanes 3 --workers 1 --etcd
  nodepkictl cluster create --controlplanes 3 --workers 1 --kubernetes --state ./_out/cluster
  kubectl --kubeconfig ./_out/cluster/kubeconfig get --raw /readyz

  # a cluster of your own bundle: its talosconfigs, configs and secrets.yaml work against it
  nodepkictl gen secrets -o secrets.yaml
  nodepkictl cluster create --name demo --with-secrets secrets.yaml --state ./_out/cluster`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error

			opts.Dir, _ = cmd.Flags().GetString("state")
			opts.Progress = cmd.ErrOrStderr()

			if opts.Daemon, err = findDaemon(daemon); err != nil {
				return err
			}

			if opts.FirstAddress, err = netip.ParseAddr(first); err != nil {
				return fmt.Errorf("--first-address %q is not an IP address: %w", first, err)
			}

			if secrets != "" {
				if opts.Bundle, err = bundle.Load(secrets); err != nil {
					return fmt.Errorf("--with-secrets: %w", err)
				}
			}

			if kubeBinary != "" && !withKube {
				return errors.New("--kube-apiserver-binary needs --kubernetes")
			}

			// kube-apiserver runs on each control plane's own etcd member.
			withEtcd = withEtcd || withKube

			if etcdBinary != "" && !withEtcd {
				return errors.New("--etcd-binary needs --etcd")
			}

			if withEtcd {
				if opts.EtcdBinary, err = findBinary(etcdBinary, "etcd", "--etcd-binary", "make tools"); err != nil {
					return err
				}
			}

			if withKube {
				if opts.KubeAPIServerBinary, err = findBinary(kubeBinary, "kube-apiserver", "--kube-apiserver-binary", "make tools-kubernetes"); err != nil {
					return err
				}
			}

			c, err := cluster.Create(cmd.Context(), opts)
			if err != nil {
				return err
			}

			fmt.Fprintf(cmd.OutOrStdout(), `
cluster %q is up: %d control plane(s), %d worker(s)

talosconfig: %s
  nodepkictl --talosconfig %s get certificatestatuses
  nodepkictl --talosconfig %s get acceptedcas -o yaml
  nodepkictl cluster show --state %s
  nodepkictl cluster destroy --state %s
`, c.Name, opts.ControlPlanes, opts.Workers, c.Talosconfig, c.Talosconfig, c.Talosconfig, c.Dir, c.Dir)

			if c.Kubeconfig != "" {
				fmt.Fprintf(cmd.OutOrStdout(), `
kubeconfig: %s
  kubectl --kubeconfig %s get --raw /readyz
  kubectl --kubeconfig %s auth whoami
`, c.Kubeconfig, c.Kubeconfig, c.Kubeconfig)
			}

			return nil
		},
	}

	flags := cmd.Flags()
	flags.StringVar(&opts.Name, "name", "nodepki", "cluster name (talosconfig context)")
	flags.IntVar(&opts.ControlPlanes, "controlplanes", 1, "number of control-plane nodes")
	flags.IntVar(&opts.Workers, "workers", 2, "number of worker nodes")
	flags.StringVar(&first, "first-address", "127.0.0.2", "address of the first node; the others follow it (a loopback address)")
	flags.StringVar(&secrets, "with-secrets", "", "secrets.yaml to build the cluster from (default: a new bundle, saved as secrets.yaml in --state)")
	flags.StringVar(&daemon, "daemon", "", "path of the nodepkid binary (default: next to nodepkictl, then $PATH)")
	flags.BoolVar(&withEtcd, "etcd", false, "run a real etcd member on every control plane")
	flags.StringVar(&etcdBinary, "etcd-binary", "", "path of the etcd binary, with --etcd (default: next to nodepkictl, then $PATH)")
	flags.BoolVar(&withKube, "kubernetes", false, "run kube-apiserver on every control plane (implies --etcd) and write <state>/kubeconfig")
	flags.StringVar(&kubeBinary, "kube-apiserver-binary", "",
		"path of the kube-apiserver binary, with --kubernetes (default: next to nodepkictl, then $PATH)")

	return cmd
}

func newClusterShowCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Show the nodes of the local cluster and whether they run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ := cmd.Flags().GetString("state")

			c, err := cluster.Load(dir)
			if err != nil {
				return err
			}

			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 3, ' ', 0)
			fmt.Fprintf(w, "cluster %s (%s)\ntalosconfig %s\n", c.Name, c.Dir, c.Talosconfig)

			if c.Kubeconfig != "" {
				fmt.Fprintf(w, "kubeconfig %s\n", c.Kubeconfig)
			}

			fmt.Fprintf(w, "\nNAME\tADDRESS\tTYPE\tPID\tRUNNING\tLOG\n")

			for _, n := range c.Nodes {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%t\t%s\n", n.Name, n.Address, n.Type, n.PID, n.Running(), n.Log)
			}

			return w.Flush()
		},
	}
}

func newClusterDestroyCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "destroy",
		Short: "Stop every node of the local cluster and remove its state directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, _ := cmd.Flags().GetString("state")

			c, err := cluster.Load(dir)
			if err != nil {
				return err
			}

			if err = c.Destroy(); err != nil {
				return err
			}

			fmt.Fprintf(cmd.ErrOrStderr(), "cluster %q destroyed, %s removed\n", c.Name, c.Dir)

			return nil
		},
	}
}

// findDaemon locates nodepkid: the flag, next to this executable, or on $PATH.
func findDaemon(flag string) (string, error) {
	return findBinary(flag, "nodepkid", "--daemon", "make build")
}

// findBinary locates an executable: the flag, next to this executable, or on $PATH.
func findBinary(flag, name, flagName, build string) (string, error) {
	if flag != "" {
		return filepath.Abs(flag)
	}

	if self, err := os.Executable(); err == nil {
		candidate := filepath.Join(filepath.Dir(self), name)
		if _, err = os.Stat(candidate); err == nil {
			return candidate, nil
		}
	}

	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found next to nodepkictl or on $PATH: build it with `%s` or pass %s", name, build, flagName)
	}

	return filepath.Abs(path)
}
