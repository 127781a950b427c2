// Package cluster owns local clusters: a secrets bundle, machine configs and one real nodepkid
// process per node on loopback addresses (127.0.0.2, 127.0.0.3, ...), described by a cluster.yaml
// under the cluster's state directory so that later commands can show, restart or destroy it.
package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// Node is one nodepkid process of a local cluster.
type Node struct {
	Name     string `yaml:"name"`
	Address  string `yaml:"address"`
	Type     string `yaml:"type"`
	PID      int    `yaml:"pid"`
	StateDir string `yaml:"stateDir"`
	Config   string `yaml:"config"`
	Log      string `yaml:"log"`

	// exited is closed when the process this Cluster started exits; nil for a loaded cluster.
	exited <-chan struct{}
}

// Cluster describes a local cluster; it is saved as cluster.yaml in Dir.
type Cluster struct {
	Name        string `yaml:"name"`
	Dir         string `yaml:"-"`
	Daemon      string `yaml:"daemon"`
	APIPort     int    `yaml:"apiPort"`
	TrustdPort  int    `yaml:"trustdPort"`
	Talosconfig string `yaml:"talosconfig"`
	// EtcdBinary, if set, is run by every control plane (nodepkid --etcd-binary).
	EtcdBinary string `yaml:"etcdBinary,omitempty"`
	// KubeAPIServerBinary, if set, is run by every control plane (nodepkid --kube-apiserver-binary);
	// Kubeconfig is then the admin kubeconfig.
	KubeAPIServerBinary string `yaml:"kubeAPIServerBinary,omitempty"`
	Kubeconfig          string `yaml:"kubeconfig,omitempty"`
	Nodes               []Node `yaml:"nodes"`
}

const descriptorName = "cluster.yaml"

// Load reads the cluster described in dir.
func Load(dir string) (*Cluster, error) {
	data, err := os.ReadFile(filepath.Join(dir, descriptorName))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no cluster in %s (no %s): create one with `nodepkictl cluster create --state %s`",
				dir, descriptorName, dir)
		}

		return nil, fmt.Errorf("error reading cluster descriptor: %w", err)
	}

	var c Cluster

	if dir, err = filepath.Abs(dir); err != nil {
		return nil, fmt.Errorf("cluster directory: %w", err)
	}

	if err = yaml.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("error parsing %s: %w", filepath.Join(dir, descriptorName), err)
	}

	c.Dir = dir

	return &c, nil
}

func (c *Cluster) save() error {
	data, err := yaml.Marshal(c)
	if err != nil {
		return err
	}

	return atomicfile.WriteFile(filepath.Join(c.Dir, descriptorName), data)
}

// ControlPlanes returns the addresses of the control-plane nodes.
func (c *Cluster) ControlPlanes() []string {
	var out []string

	for _, n := range c.Nodes {
		if n.Type != machineconfig.TypeWorker {
			out = append(out, n.Address)
		}
	}

	return out
}

// Addresses returns every node's address.
func (c *Cluster) Addresses() []string {
	out := make([]string, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		out = append(out, n.Address)
	}

	return out
}

// Node returns the node with the given name or address.
func (c *Cluster) Node(nameOrAddress string) (*Node, error) {
	for i := range c.Nodes {
		if c.Nodes[i].Name == nameOrAddress || c.Nodes[i].Address == nameOrAddress {
			return &c.Nodes[i], nil
		}
	}

	return nil, fmt.Errorf("cluster %q has no node %q", c.Name, nameOrAddress)
}

// Running reports whether the node's process is alive and is its nodepkid.
func (n *Node) Running() bool {
	if n.PID <= 0 {
		return false
	}

	cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(n.PID), "cmdline"))
	if err != nil {
		return false
	}

	args := strings.Split(string(cmdline), "\x00")

	return slices.Contains(args, n.StateDir) && strings.HasSuffix(args[0], "nodepkid")
}

// nodeAddresses returns count loopback addresses starting at first.
func nodeAddresses(first netip.Addr, count int) ([]netip.Addr, error) {
	if !first.IsLoopback() || !first.Is4() {
		return nil, fmt.Errorf("first node address %s is not an IPv4 loopback address (127.0.0.0/8)", first)
	}

	out := make([]netip.Addr, 0, count)

	for addr := first; len(out) < count; addr = addr.Next() {
		if !addr.IsLoopback() {
			return nil, fmt.Errorf("not enough loopback addresses after %s for %d nodes", first, count)
		}

		out = append(out, addr)
	}

	return out, nil
}

// stop sends SIGTERM and waits for the process to exit, then SIGKILLs it.
func (n *Node) stop(timeout time.Duration) error {
	if !n.Running() {
		return nil
	}

	if err := syscall.Kill(n.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("error stopping node %s (pid %d): %w", n.Name, n.PID, err)
	}

	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !n.Running() {
			return nil
		}

		time.Sleep(20 * time.Millisecond)
	}

	return n.kill()
}

// kill sends SIGKILL and waits for the process to disappear.
func (n *Node) kill() error {
	if !n.Running() {
		return nil
	}

	if err := syscall.Kill(n.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("error killing node %s (pid %d): %w", n.Name, n.PID, err)
	}

	for range 250 {
		if !n.Running() {
			return nil
		}

		time.Sleep(20 * time.Millisecond)
	}

	return fmt.Errorf("node %s (pid %d) did not exit after SIGKILL", n.Name, n.PID)
}
