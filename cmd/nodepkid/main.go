// Command nodepkid is the nodepki node daemon: it runs the certificate controllers for one node,
// serves the node API (mTLS, :50000) and, on control-plane nodes, trustd (:50001).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := newRootCmd().ExecuteContext(ctx); err != nil {
		if !errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "error:", err)
		}

		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	var opts daemonOptions

	cmd := &cobra.Command{
		Use:   "nodepkid --config FILE --state-dir DIR --address IP",
		Short: "Run the nodepki node daemon",
		Long: `nodepkid runs the nodepki certificate subsystem of one node.

On first boot it takes the machine config from --config, validates it and persists it under
--state-dir once it can serve (a first boot that fails, on a port in use say, persists nothing).
Later boots use the persisted config (a config applied through the API survives a restart); a
--config file that differs from it is ignored with a warning: change a running node's config with
nodepkictl apply-config. It serves the node API on --address:--api-port with mutual TLS and,
on control-plane nodes, trustd on --address:--trustd-port for workers' certificate requests.

Control planes write the etcd PKI files under --state-dir/secrets/etcd. With --etcd-binary a control
plane also runs an etcd member (client https://ADDRESS:2379, peer https://ADDRESS:2380, data in
--state-dir/etcd): one control plane bootstraps the cluster on "nodepkictl bootstrap", the others
join it. etcd runs in its own process group and survives a crash of nodepkid, which adopts it again
when it restarts; a clean shutdown of nodepkid stops it.

With --kube-apiserver-binary (which needs --etcd-binary) a control plane also runs kube-apiserver on
https://ADDRESS:6443 against its own etcd member, with RBAC, the files nodepki writes under
--state-dir/secrets/kubernetes and cluster.controlPlane.endpoint as the service-account issuer. It
logs to --state-dir/kube-apiserver.log, is restarted with backoff when it exits, and, like etcd,
survives a crash of nodepkid and stops with it. kube-apiserver reloads most of its files by itself;
when the service-account keys or the etcd CA bundle change, nodepkid restarts it, one control plane
at a time under the cluster-wide lock etcd members restart under. "nodepkictl get apiserverstatuses"
shows its state.`,
		Example:       `  nodepkid --config controlplane.yaml --state-dir /var/lib/nodepki --address 127.0.0.2`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return run(cmd.Context(), opts)
		},
	}

	flags := cmd.Flags()
	flags.StringVar(&opts.configPath, "config", "", "machine config file used on first boot")
	flags.StringVar(&opts.stateDir, "state-dir", "", "directory for persisted state (created 0700)")
	flags.StringVar(&opts.address, "address", "", "IP address this node serves on and is known by")
	flags.StringVar(&opts.hostname, "hostname", "",
		"host name of this node (certificate SANs, member record); default: the machine's host name. Nodes of one cluster need distinct names: trustd never signs one node's name for another")
	flags.IntVar(&opts.apiPort, "api-port", 50000, "node API port")
	flags.IntVar(&opts.trustdPort, "trustd-port", 50001, "trustd port (control-plane nodes)")
	flags.StringSliceVar(&opts.trustdEndpoints, "trustd-endpoint", nil,
		"extra trustd endpoints for workers (host or host:port), besides cluster.controlPlane.endpoint's host")
	flags.StringSliceVar(&opts.controlPlanes, "control-plane", nil,
		"addresses and host names of the other control planes (on a control plane): the node API forwards calls to them "+
			"(besides the members it records and cluster.controlPlane.endpoint's host) and asks those given by address about the members they record, "+
			"so that a worker another control plane signed for is reached too; trustd never signs them for a worker")
	flags.BoolVar(&opts.hostAddresses, "host-addresses", true,
		"add the host's non-loopback addresses to the node addresses (certificate SANs)")
	flags.StringVar(&opts.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	flags.StringVar(&opts.etcdBinary, "etcd-binary", "",
		"etcd executable to run a member with on a control plane (default: only write the etcd PKI files)")
	flags.StringVar(&opts.kubeAPIServer, "kube-apiserver-binary", "",
		"kube-apiserver executable to run on a control plane against its etcd member (needs --etcd-binary; default: only write kube-apiserver's files)")
	flags.StringVar(&opts.metricsAddress, "metrics-address", "",
		"ADDR:PORT to serve Prometheus metrics on at /metrics over plain HTTP (default: off)")

	for _, name := range []string{"state-dir", "address"} {
		_ = cmd.MarkFlagRequired(name)
	}

	return cmd
}
