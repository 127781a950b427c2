package cluster

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/client"
	etcdpkg "github.com/nodepki/nodepki/pkg/etcd"
	"github.com/nodepki/nodepki/resources/etcd"
)

// etcdStopGrace is how long an orphaned etcd gets to stop on SIGTERM.
const etcdStopGrace = 10 * time.Second

// bootstrapEtcd asks the first control plane to bootstrap etcd and waits until every control
// plane runs a healthy voting member.
func (c *Cluster) bootstrapEtcd(ctx context.Context, progress io.Writer) error {
	cl, err := c.Connect(ctx)
	if err != nil {
		return err
	}

	defer cl.Close()

	first := c.ControlPlanes()[0]

	if _, err = cl.Etcd().Bootstrap(cl.WithNode(ctx, first), &nodeapi.EtcdBootstrapRequest{}); err != nil {
		return fmt.Errorf("error bootstrapping etcd on %s: %w", first, err)
	}

	fmt.Fprintf(progress, "etcd bootstrapped on %s; waiting for every control plane's member\n", first)

	return c.waitEtcd(ctx, cl, progress)
}

// WaitEtcd waits until every control plane runs a healthy voting etcd member.
func (c *Cluster) WaitEtcd(ctx context.Context, progress io.Writer) error {
	cl, err := c.Connect(ctx)
	if err != nil {
		return err
	}

	defer cl.Close()

	return c.waitEtcd(ctx, cl, progress)
}

func (c *Cluster) waitEtcd(ctx context.Context, cl *client.Client, progress io.Writer) error {
	controlPlanes := c.ControlPlanes()

	for _, node := range controlPlanes {
		if err := waitEtcdMember(ctx, cl, node, len(controlPlanes)); err != nil {
			return fmt.Errorf("etcd on %s: %w", node, err)
		}

		fmt.Fprintf(progress, "- etcd on %s: healthy\n", node)
	}

	return nil
}

// waitEtcdMember waits until the node's member is healthy and it sees members healthy voting members.
func waitEtcdMember(ctx context.Context, cl *client.Client, node string, members int) error {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()

	ctx = cl.WithNode(ctx, node)

	var lastErr error

	for {
		lastErr = etcdMemberReady(ctx, cl, members)
		if lastErr == nil {
			return nil
		}

		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %w)", ctx.Err(), lastErr)
		case <-ticker.C:
		}
	}
}

func etcdMemberReady(ctx context.Context, cl *client.Client, members int) error {
	status, err := safe.StateGetByID[*etcd.MemberStatus](ctx, cl.COSI(), etcd.LocalMemberID)
	if err != nil {
		return err
	}

	if !status.TypedSpec().Healthy {
		return fmt.Errorf("member is %s: %s", status.TypedSpec().State, status.TypedSpec().LastError)
	}

	list, err := cl.Etcd().MemberList(ctx, &nodeapi.EtcdMemberListRequest{})
	if err != nil {
		return err
	}

	healthy := 0

	for _, m := range list.GetMembers() {
		if m.GetHealthy() && !m.GetLearner() {
			healthy++
		}
	}

	if healthy < members {
		return fmt.Errorf("%d of %d members healthy voting members", healthy, members)
	}

	return nil
}

// stopEtcd stops the etcd the node's pidfile names, if it still runs.
func (n *Node) stopEtcd() error {
	stateDir, err := filepath.Abs(n.StateDir)
	if err != nil {
		return fmt.Errorf("error resolving the state directory of node %s: %w", n.Name, err)
	}

	proc, err := etcdpkg.Adopt(etcdpkg.MemberConfig{
		DataDir: filepath.Join(stateDir, "etcd"),
		PIDFile: filepath.Join(stateDir, "etcd.pid"),
	})
	if err != nil || proc == nil {
		return err
	}

	if err = proc.Stop(context.Background(), etcdStopGrace); err != nil {
		return fmt.Errorf("error stopping the etcd of node %s: %w", n.Name, err)
	}

	return nil
}
