package cluster

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// Destroy stops every node (SIGTERM, then SIGKILL after the timeout) and removes the cluster directory.
func (c *Cluster) Destroy() error {
	var errs []error

	for i := range c.Nodes {
		if err := c.Nodes[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}

		// An etcd or kube-apiserver whose nodepkid was killed keeps running; nodepkid stops them
		// only on a clean exit.
		if err := c.Nodes[i].stopAPIServer(); err != nil {
			errs = append(errs, err)
		}

		if err := c.Nodes[i].stopEtcd(); err != nil {
			errs = append(errs, err)
		}
	}

	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("error stopping nodes, %s kept: %w", c.Dir, err)
	}

	if err := os.RemoveAll(c.Dir); err != nil {
		return fmt.Errorf("error removing %s: %w", c.Dir, err)
	}

	return nil
}

// Kill SIGKILLs a node, as a crash would.
func (c *Cluster) Kill(nameOrAddress string) error {
	n, err := c.Node(nameOrAddress)
	if err != nil {
		return err
	}

	return n.kill()
}

// Stop stops a node gracefully.
func (c *Cluster) Stop(nameOrAddress string) error {
	n, err := c.Node(nameOrAddress)
	if err != nil {
		return err
	}

	return n.stop(10 * time.Second)
}

// Start starts a stopped node again with its persisted state and records its new PID.
func (c *Cluster) Start(nameOrAddress string) error {
	n, err := c.Node(nameOrAddress)
	if err != nil {
		return err
	}

	if n.Running() {
		return fmt.Errorf("node %s is already running (pid %d)", n.Name, n.PID)
	}

	if err = c.startNode(n); err != nil {
		return err
	}

	return c.save()
}
