package cluster

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/siderolabs/go-retry/retry"

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

	defer cl.Close()

	for _, n := range c.Nodes {
		if err = waitNodeReady(ctx, cl, n.Address); err != nil {
			return fmt.Errorf("node %s: %w", n.Address, err)
		}

		fmt.Fprintf(progress, "- %s: OK\n", n.Address)
	}

	return nil
}

const (
	// readyPollInterval is how often a node's API certificate status is read while waiting.
	readyPollInterval = 50 * time.Millisecond
	// readyWaitLimit only satisfies go-retry, which wants a bound of its own: the caller's context
	// is what really bounds the wait.
	readyWaitLimit = time.Hour
)

func waitNodeReady(ctx context.Context, cl *client.Client, node string) error {
	var lastErr error

	err := retry.Constant(readyWaitLimit, retry.WithUnits(readyPollInterval)).RetryWithContext(ctx, func(ctx context.Context) error {
		lastErr = nodeReady(ctx, cl, node)

		return retry.ExpectedError(lastErr)
	})

	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("%w (last: %w)", ctx.Err(), lastErr)
	default:
		return fmt.Errorf("not ready after %s: %w", readyWaitLimit, lastErr)
	}
}

// nodeReady returns nil when the node's API certificate is valid, and why not otherwise.
func nodeReady(ctx context.Context, cl *client.Client, node string) error {
	status, err := safe.StateGetByID[*pki.CertificateStatus](cl.WithNode(ctx, node), cl.COSI(), pki.CertAPI)
	if err != nil {
		return err
	}

	if status.TypedSpec().State != pki.StateValid {
		return fmt.Errorf("API certificate is %s %s", status.TypedSpec().State, status.TypedSpec().LastError)
	}

	return nil
}
