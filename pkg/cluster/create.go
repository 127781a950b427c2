package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/runtime/trustd"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
)

// Options configure Create.
type Options struct {
	Name          string
	ControlPlanes int
	Workers       int
	// Dir is the cluster's state directory; it must not hold a cluster yet.
	Dir string
	// Daemon is the path of the nodepkid binary.
	Daemon string
	// FirstAddress is the first node's address (default 127.0.0.2); the others follow it.
	FirstAddress netip.Addr
	APIPort      int
	TrustdPort   int
	// Bundle is the secrets bundle to use; nil generates one (saved as secrets.yaml in Dir).
	Bundle *bundle.Bundle
	// Progress receives one line per step.
	Progress io.Writer
	// ReadyTimeout bounds the wait for every node's API certificate, and then for etcd (default 60 s).
	ReadyTimeout time.Duration
	// EtcdBinary makes every control plane run an etcd member, bootstrapped on the first one.
	EtcdBinary string
}

func (o *Options) setDefaults() error {
	if o.Name == "" {
		o.Name = "nodepki"
	}

	if o.ControlPlanes < 1 {
		return errors.New("--controlplanes must be at least 1")
	}

	if o.Workers < 0 {
		return errors.New("--workers cannot be negative")
	}

	if !o.FirstAddress.IsValid() {
		o.FirstAddress = netip.MustParseAddr("127.0.0.2")
	}

	if o.APIPort == 0 {
		o.APIPort = client.DefaultPort
	}

	if o.TrustdPort == 0 {
		o.TrustdPort = trustd.DefaultPort
	}

	if o.Progress == nil {
		o.Progress = io.Discard
	}

	if o.ReadyTimeout == 0 {
		o.ReadyTimeout = 60 * time.Second
	}

	if _, err := os.Stat(o.Daemon); err != nil {
		return fmt.Errorf("nodepkid binary %q: %w (build it with `make build`)", o.Daemon, err)
	}

	if o.EtcdBinary != "" {
		if _, err := os.Stat(o.EtcdBinary); err != nil {
			return fmt.Errorf("etcd binary %q: %w (build it with `make tools`)", o.EtcdBinary, err)
		}
	}

	return nil
}

// Create generates secrets and configs, starts one nodepkid per node and waits until every node
// serves with a valid API certificate. On failure the processes it started are stopped.
func Create(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}

	if _, err := os.Stat(filepath.Join(opts.Dir, descriptorName)); err == nil {
		return nil, fmt.Errorf("%s already holds a cluster: destroy it first with `nodepkictl cluster destroy --state %s`",
			opts.Dir, opts.Dir)
	}

	addresses, err := nodeAddresses(opts.FirstAddress, opts.ControlPlanes+opts.Workers)
	if err != nil {
		return nil, err
	}

	if err = os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("error creating the cluster directory: %w", err)
	}

	c := &Cluster{
		Name:        opts.Name,
		Dir:         opts.Dir,
		Daemon:      opts.Daemon,
		APIPort:     opts.APIPort,
		TrustdPort:  opts.TrustdPort,
		Talosconfig: filepath.Join(opts.Dir, "talosconfig"),
		EtcdBinary:  opts.EtcdBinary,
	}

	if err = c.generate(opts, addresses); err != nil {
		return nil, err
	}

	fmt.Fprintf(opts.Progress, "starting %d nodes\n", len(c.Nodes))

	for i := range c.Nodes {
		if err = c.start(&c.Nodes[i]); err != nil {
			c.stopAll()

			return nil, err
		}

		fmt.Fprintf(opts.Progress, "- %s (%s, %s): started, pid %d\n", c.Nodes[i].Address, c.Nodes[i].Name, c.Nodes[i].Type, c.Nodes[i].PID)
	}

	if err = c.save(); err != nil {
		c.stopAll()

		return nil, fmt.Errorf("error saving the cluster descriptor: %w", err)
	}

	fmt.Fprintln(opts.Progress, "waiting for every node's API certificate")

	waitCtx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()

	if err = c.WaitReady(waitCtx, opts.Progress); err != nil {
		return c, fmt.Errorf("cluster started but not ready: %w (node logs are in %s)", err, filepath.Join(opts.Dir, "nodes"))
	}

	if c.EtcdBinary != "" {
		if err = c.bootstrapEtcd(waitCtx, opts.Progress); err != nil {
			return c, fmt.Errorf("cluster started but etcd is not ready: %w (etcd logs are in %s)", err, filepath.Join(opts.Dir, "nodes", "*", "etcd.log"))
		}
	}

	return c, nil
}

// generate writes secrets.yaml, the machine configs and the talosconfig, and fills c.Nodes.
func (c *Cluster) generate(opts Options, addresses []netip.Addr) error {
	b := opts.Bundle

	if b == nil {
		var err error

		if b, err = bundle.Generate(); err != nil {
			return err
		}

		if err = b.WriteFile(filepath.Join(c.Dir, "secrets.yaml"), false); err != nil {
			return err
		}
	}

	endpoint := (&url.URL{Scheme: "https", Host: netip.AddrPortFrom(addresses[0], 6443).String()}).String()

	controlPlane, worker, err := generate.Generate(generate.Input{
		ClusterName: opts.Name,
		Endpoint:    endpoint,
		Bundle:      b,
	})
	if err != nil {
		return fmt.Errorf("error generating machine configs: %w", err)
	}

	nodesDir := filepath.Join(c.Dir, "nodes")
	if err = os.MkdirAll(nodesDir, 0o700); err != nil {
		return err
	}

	for i, addr := range addresses {
		node := Node{Address: addr.String(), Type: machineconfig.TypeControlPlane}
		cfg := controlPlane

		if i >= opts.ControlPlanes {
			node.Type = machineconfig.TypeWorker
			cfg = worker
			node.Name = opts.Name + "-worker-" + strconv.Itoa(i-opts.ControlPlanes+1)
		} else {
			node.Name = opts.Name + "-controlplane-" + strconv.Itoa(i+1)
		}

		node.StateDir = filepath.Join(nodesDir, node.Name)
		node.Config = filepath.Join(nodesDir, node.Name+".yaml")
		node.Log = filepath.Join(nodesDir, node.Name+".log")

		data, err := cfg.Bytes()
		if err != nil {
			return err
		}

		if err = atomicfile.WriteFile(node.Config, data); err != nil {
			return fmt.Errorf("error writing %s: %w", node.Config, err)
		}

		c.Nodes = append(c.Nodes, node)
	}

	crt, key, err := b.NewClientCertificate([]string{role.Admin}, certs.ClientLifetime)
	if err != nil {
		return err
	}

	talosconfig := clientconfig.New(opts.Name, []string{addresses[0].String()}, b.Certs.OS.Crt, crt, key)
	talosconfig.Contexts[opts.Name].Nodes = c.Addresses()

	return talosconfig.Save(c.Talosconfig)
}

// start launches the node's nodepkid in its own session, logging to its log file.
func (c *Cluster) start(n *Node) error {
	logFile, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("error opening the log of %s: %w", n.Name, err)
	}

	defer logFile.Close() //nolint:errcheck

	args := []string{
		"--config", n.Config,
		"--state-dir", n.StateDir,
		"--address", n.Address,
		"--api-port", strconv.Itoa(c.APIPort),
		"--trustd-port", strconv.Itoa(c.TrustdPort),
		"--host-addresses=false",
	}

	if c.EtcdBinary != "" && n.Type != machineconfig.TypeWorker {
		args = append(args, "--etcd-binary", c.EtcdBinary)
	}

	cmd := exec.Command(c.Daemon, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	if err = cmd.Start(); err != nil {
		return fmt.Errorf("error starting %s: %w", n.Name, err)
	}

	n.PID = cmd.Process.Pid

	// Reap the child when it exits so that a stopped node does not linger as a zombie while the
	// starting process (a test, say) is still running.
	go cmd.Wait() //nolint:errcheck

	return nil
}

func (c *Cluster) stopAll() {
	for i := range c.Nodes {
		c.Nodes[i].stop(5 * time.Second) //nolint:errcheck
	}
}
