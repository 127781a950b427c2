package cluster

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"

	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// Connect opens a node API client with the cluster's talosconfig.
func (c *Cluster) Connect(ctx context.Context) (*client.Client, error) {
	cfg, err := clientconfig.Open(c.Talosconfig)
	if err != nil {
		return nil, err
	}

	return client.New(ctx, client.ClientOptions{Config: cfg})
}

// WaitReady waits until every node reports its API certificate valid, printing each node as it
// gets there. Workers are reached through the control plane, so this also proves forwarding.
func (c *Cluster) WaitReady(ctx context.Context, progress io.Writer) error {
	cl, err := c.Connect(ctx)
	if err != nil {
		return err
	}

	defer cl.Close() //nolint:errcheck

	for _, n := range c.Nodes {
		if err = waitNodeReady(ctx, cl, n.Address); err != nil {
			return fmt.Errorf("node %s: %w", n.Address, err)
		}

		fmt.Fprintf(progress, "- %s: OK\n", n.Address)
	}

	return nil
}

func waitNodeReady(ctx context.Context, cl *client.Client, node string) error {
	ticker := time.NewTicker(50 * time.Millisecond)
	defer ticker.Stop()

	var lastErr error

	for {
		status, err := safe.StateGetByID[*pki.CertificateStatus](cl.WithNode(ctx, node), cl.COSI(), pki.CertAPI)

		switch {
		case err != nil:
			lastErr = err
		case status.TypedSpec().State == pki.StateValid:
			return nil
		default:
			lastErr = fmt.Errorf("API certificate is %s %s", status.TypedSpec().State, status.TypedSpec().LastError)
		}

		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), lastErr)
		case <-ticker.C:
		}
	}
}
