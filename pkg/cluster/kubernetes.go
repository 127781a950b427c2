package cluster

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/client"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/kubernetes"
)

// apiServerStopGrace is how long an orphaned kube-apiserver gets to stop on SIGTERM.
const apiServerStopGrace = 10 * time.Second

// KubeconfigName is the admin kubeconfig of a cluster that runs kube-apiserver, next to its talosconfig.
const KubeconfigName = "kubeconfig"

// startKubernetes waits until every control plane's kube-apiserver is ready, then writes the admin
// kubeconfig, issued by the first control plane (`nodepkictl kubeconfig`).
func (c *Cluster) startKubernetes(ctx context.Context, progress io.Writer) error {
	cl, err := c.Connect(ctx)
	if err != nil {
		return err
	}

	defer cl.Close()

	fmt.Fprintln(progress, "waiting for every control plane's kube-apiserver")

	if err = c.waitAPIServers(ctx, cl, progress); err != nil {
		return err
	}

	first := c.ControlPlanes()[0]

	resp, err := cl.Node().Kubeconfig(cl.WithNode(ctx, first), &nodeapi.KubeconfigRequest{})
	if err != nil {
		return fmt.Errorf("error issuing the admin kubeconfig on %s: %w", first, err)
	}

	if err = atomicfile.WriteFile(c.Kubeconfig, resp.GetKubeconfig()); err != nil {
		return fmt.Errorf("error writing the admin kubeconfig: %w", err)
	}

	fmt.Fprintf(progress, "admin kubeconfig written to %s\n", c.Kubeconfig)

	return nil
}

// WaitAPIServers waits until every control plane's kube-apiserver is ready.
func (c *Cluster) WaitAPIServers(ctx context.Context, progress io.Writer) error {
	cl, err := c.Connect(ctx)
	if err != nil {
		return err
	}

	defer cl.Close()

	return c.waitAPIServers(ctx, cl, progress)
}

func (c *Cluster) waitAPIServers(ctx context.Context, cl *client.Client, progress io.Writer) error {
	for _, n := range c.Nodes {
		if n.Type == machineconfig.TypeWorker {
			continue
		}

		started := time.Now()

		if err := waitAPIServer(ctx, cl, n.Address); err != nil {
			return fmt.Errorf("kube-apiserver on %s (%s): %w (its log: %s)", n.Address, n.Name, err, filepath.Join(n.StateDir, "kube-apiserver.log"))
		}

		fmt.Fprintf(progress, "- kube-apiserver on %s: ready (waited %s)\n", n.Address, time.Since(started).Round(100*time.Millisecond))
	}

	return nil
}

// waitAPIServer waits until the node reports its kube-apiserver ready.
func waitAPIServer(ctx context.Context, cl *client.Client, node string) error {
	ticker := time.NewTicker(200 * time.Millisecond)
	defer ticker.Stop()

	ctx = cl.WithNode(ctx, node)

	var lastErr error

	for {
		status, err := safe.StateGetByID[*kubernetes.APIServerStatus](ctx, cl.COSI(), kubernetes.APIServerStatusID)

		switch {
		case err != nil:
			lastErr = err
		case status.TypedSpec().Ready:
			return nil
		default:
			lastErr = fmt.Errorf("%s: %s", status.TypedSpec().State, status.TypedSpec().LastError)
		}

		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), lastErr)
		case <-ticker.C:
		}
	}
}

// stopAPIServer stops the kube-apiserver the node's pidfile names, if it still runs.
func (n *Node) stopAPIServer() error {
	stateDir, err := filepath.Abs(n.StateDir)
	if err != nil {
		return fmt.Errorf("error resolving the state directory of node %s: %w", n.Name, err)
	}

	proc, err := kubepki.AdoptAPIServer(filepath.Join(stateDir, "secrets", "kubernetes"), filepath.Join(stateDir, "kube-apiserver.pid"))
	if err != nil || proc == nil {
		return err
	}

	if err = proc.Stop(context.Background(), apiServerStopGrace); err != nil {
		return fmt.Errorf("error stopping the kube-apiserver of node %s: %w", n.Name, err)
	}

	return nil
}
