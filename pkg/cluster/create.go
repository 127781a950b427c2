package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/pkg/trustd"
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
	// ReadyTimeout bounds the wait for every node's API certificate, then for etcd and for
	// kube-apiserver (default 60 s, 3 min with kube-apiserver).
	ReadyTimeout time.Duration
	// EtcdBinary makes every control plane run an etcd member, bootstrapped on the first one.
	EtcdBinary string
	// KubeAPIServerBinary makes every control plane run kube-apiserver on its etcd member (needs
	// EtcdBinary); Create then waits for every kube-apiserver and writes the admin kubeconfig.
	KubeAPIServerBinary string
}

// hostnameLabel is a cluster name that leaves room in a 63-character DNS label for the node suffix.
var hostnameLabel = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9-]{0,39}$`)

func (o *Options) setDefaults() error {
	if o.Name == "" {
		o.Name = "nodepki"
	}

	if !hostnameLabel.MatchString(o.Name) {
		return fmt.Errorf("--name %q cannot start host names: each node is named <name>-controlplane-N or <name>-worker-N, "+
			"so use at most 40 letters, digits and hyphens, starting with a letter or digit", o.Name)
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

		// Three kube-apiservers starting at once on a small machine take most of a minute.
		if o.KubeAPIServerBinary != "" {
			o.ReadyTimeout = 3 * time.Minute
		}
	}

	if _, err := os.Stat(o.Daemon); err != nil {
		return fmt.Errorf("nodepkid binary %q: %w (build it with `make build`)", o.Daemon, err)
	}

	if o.EtcdBinary != "" {
		if _, err := os.Stat(o.EtcdBinary); err != nil {
			return fmt.Errorf("etcd binary %q: %w (build it with `make tools`)", o.EtcdBinary, err)
		}
	}

	if o.KubeAPIServerBinary != "" {
		if o.EtcdBinary == "" {
			return errors.New("kube-apiserver needs etcd: every control plane's kube-apiserver uses its own etcd member (give an etcd binary too)")
		}

		if _, err := os.Stat(o.KubeAPIServerBinary); err != nil {
			return fmt.Errorf("kube-apiserver binary %q: %w (build it with `make tools-kubernetes`)", o.KubeAPIServerBinary, err)
		}
	}

	return nil
}

// Create generates secrets and configs, starts one nodepkid per node and waits until every node
// serves with a valid API certificate. Addresses already in use are refused before anything is
// written. A node that exits while the cluster starts fails Create at once with that node's own
// error; the processes are then stopped and everything Create wrote is removed. A cluster whose
// nodes run but are not ready in time is returned with the error and left running, for its logs.
func Create(ctx context.Context, opts Options) (*Cluster, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}

	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("cluster directory %q: %w", opts.Dir, err)
	}

	if _, err = os.Stat(filepath.Join(dir, descriptorName)); err == nil {
		return nil, fmt.Errorf("%s already holds a cluster: destroy it first with `nodepkictl cluster destroy --state %s`",
			dir, dir)
	}

	addresses, err := nodeAddresses(opts.FirstAddress, opts.ControlPlanes+opts.Workers)
	if err != nil {
		return nil, err
	}

	if err = checkPortsFree(addresses, opts.APIPort, opts.TrustdPort, MetricsPort); err != nil {
		return nil, err
	}

	written, err := newEntries(dir)
	if err != nil {
		return nil, err
	}

	if err = os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("error creating the cluster directory: %w", err)
	}

	c := &Cluster{
		Name:        opts.Name,
		Dir:         dir,
		Daemon:      opts.Daemon,
		APIPort:     opts.APIPort,
		TrustdPort:  opts.TrustdPort,
		Talosconfig: filepath.Join(dir, "talosconfig"),
		EtcdBinary:  opts.EtcdBinary,
	}

	if opts.KubeAPIServerBinary != "" {
		c.KubeAPIServerBinary = opts.KubeAPIServerBinary
		c.Kubeconfig = filepath.Join(dir, KubeconfigName)
	}

	if err = c.start(ctx, opts, addresses); err != nil {
		if errors.As(err, new(*notReadyError)) {
			return c, err
		}

		c.stopAll()

		return nil, errors.Join(err, removeAll(written))
	}

	return c, nil
}

// start generates the cluster's files, starts the nodes and waits for them.
func (c *Cluster) start(ctx context.Context, opts Options, addresses []netip.Addr) error {
	if err := c.generate(opts, addresses); err != nil {
		return err
	}

	fmt.Fprintf(opts.Progress, "starting %d nodes\n", len(c.Nodes))

	for i := range c.Nodes {
		if err := c.startNode(&c.Nodes[i]); err != nil {
			return err
		}

		fmt.Fprintf(opts.Progress, "- %s (%s, %s): started, pid %d\n", c.Nodes[i].Address, c.Nodes[i].Name, c.Nodes[i].Type, c.Nodes[i].PID)
	}

	if err := c.save(); err != nil {
		return fmt.Errorf("error saving the cluster descriptor: %w", err)
	}

	fmt.Fprintln(opts.Progress, "waiting for every node's API certificate")

	waitCtx, cancel := context.WithTimeout(ctx, opts.ReadyTimeout)
	defer cancel()

	waitCtx, cancelCause := context.WithCancelCause(waitCtx)
	defer cancelCause(nil)

	// The channel is read here, not in the goroutine: a later Start replaces it while a goroutine
	// that has not run yet would still read the field.
	for i := range c.Nodes {
		go func(n *Node, exited <-chan struct{}) {
			select {
			case <-exited:
				cancelCause(n.exitError())
			case <-waitCtx.Done():
			}
		}(&c.Nodes[i], c.Nodes[i].exited)
	}

	err := c.WaitReady(waitCtx, opts.Progress)

	var exited *nodeExitedError
	if cause := context.Cause(waitCtx); errors.As(cause, &exited) {
		return cause
	}

	if err != nil {
		return &notReadyError{err: err, timeout: opts.ReadyTimeout, dir: c.Dir}
	}

	if c.EtcdBinary != "" {
		if err = c.bootstrapEtcd(waitCtx, opts.Progress); err != nil {
			logs := filepath.Join(c.Dir, "nodes", "*", "etcd.log")

			return &notReadyError{err: fmt.Errorf("etcd: %w (etcd logs: %s)", err, logs), timeout: opts.ReadyTimeout, dir: c.Dir}
		}
	}

	if c.KubeAPIServerBinary != "" {
		if err = c.startKubernetes(waitCtx, opts.Progress); err != nil {
			return &notReadyError{err: err, timeout: opts.ReadyTimeout, dir: c.Dir}
		}
	}

	return nil
}

// notReadyError reports nodes that run but did not get a valid API certificate in time.
type notReadyError struct {
	err     error
	timeout time.Duration
	dir     string
}

func (e *notReadyError) Error() string {
	return fmt.Sprintf("cluster started but not ready after %s: %v (the nodes keep running: their logs are in %s; "+
		"`nodepkictl cluster destroy --state %s` stops them)", e.timeout, e.err, filepath.Join(e.dir, "nodes"), e.dir)
}

func (e *notReadyError) Unwrap() error { return e.err }

// checkPortsFree refuses addresses on which the node API, trustd or metrics port is taken,
// typically by another local cluster: its nodes would answer in place of the new ones.
func checkPortsFree(addresses []netip.Addr, ports ...int) error {
	for _, addr := range addresses {
		for _, port := range ports {
			hostPort := netip.AddrPortFrom(addr, uint16(port)).String() //nolint:gosec // ports are checked by the daemon's flags

			l, err := net.Listen("tcp", hostPort)
			if err != nil {
				return fmt.Errorf("%s is already in use (another local cluster? `nodepkictl cluster show --state DIR` lists one, "+
					"`nodepkictl cluster destroy --state DIR` stops it; --first-address picks other addresses): %w", hostPort, err)
			}

			if err = l.Close(); err != nil {
				return fmt.Errorf("checking %s: %w", hostPort, err)
			}
		}
	}

	return nil
}

// nodeExitedError reports a node process that exited while the cluster was starting.
type nodeExitedError struct {
	node    string
	address string
	log     string
}

func (e *nodeExitedError) Error() string {
	return fmt.Sprintf("node %s (%s) exited at start: %s", e.node, e.address, e.log)
}

// maxLogTail bounds the log excerpt of a node that exited at start.
const maxLogTail = 2048

// exitError describes the node's exit with the end of its log, which holds the daemon's error.
func (n *Node) exitError() error {
	tail := "(no log)"

	if data, err := os.ReadFile(n.Log); err == nil && len(data) > 0 {
		data = bytes.TrimSpace(data[max(0, len(data)-maxLogTail):])
		tail = string(data)
	}

	return &nodeExitedError{node: n.Name, address: n.Address, log: tail}
}

// newEntries lists what Create would write in dir that is not there yet: all of dir if it does
// not exist. Undoing a failed Create removes these and nothing else.
func newEntries(dir string) ([]string, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return []string{dir}, nil
	}

	var out []string

	for _, name := range []string{descriptorName, "talosconfig", KubeconfigName, "nodes", "secrets.yaml"} {
		path := filepath.Join(dir, name)

		_, err := os.Stat(path)

		switch {
		case errors.Is(err, fs.ErrNotExist):
			out = append(out, path)
		case err != nil:
			return nil, fmt.Errorf("checking the cluster directory: %w", err)
		}
	}

	return out, nil
}

func removeAll(paths []string) error {
	var errs []error

	for _, path := range paths {
		if err := os.RemoveAll(path); err != nil {
			errs = append(errs, err)
		}
	}

	return errors.Join(errs...)
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

	// Every control plane is an endpoint, so that the client fails over when one is down.
	talosconfig := clientconfig.New(opts.Name, c.ControlPlanes(), b.Certs.OS.Crt, crt, key)
	talosconfig.Contexts[opts.Name].Nodes = c.Addresses()

	return talosconfig.Save(c.Talosconfig)
}

// startNode launches the node's nodepkid in its own session, logging to its log file.
func (c *Cluster) startNode(n *Node) error {
	logFile, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("error opening the log of %s: %w", n.Name, err)
	}

	defer logFile.Close()

	args := []string{
		"--config", n.Config,
		"--state-dir", n.StateDir,
		"--address", n.Address,
		"--hostname", n.Name,
		"--api-port", strconv.Itoa(c.APIPort),
		"--trustd-port", strconv.Itoa(c.TrustdPort),
		"--host-addresses=false",
		"--metrics-address", net.JoinHostPort(n.Address, strconv.Itoa(MetricsPort)),
	}

	// Each control plane is told the others, so that it forwards calls to them and trustd never
	// signs their names for a worker.
	if n.Type != machineconfig.TypeWorker {
		for _, other := range c.Nodes {
			if other.Type != machineconfig.TypeWorker && other.Address != n.Address {
				args = append(args, "--control-plane", other.Address, "--control-plane", other.Name)
			}
		}
	}

	if c.EtcdBinary != "" && n.Type != machineconfig.TypeWorker {
		args = append(args, "--etcd-binary", c.EtcdBinary)
	}

	if c.KubeAPIServerBinary != "" && n.Type != machineconfig.TypeWorker {
		args = append(args, "--kube-apiserver-binary", c.KubeAPIServerBinary)
	}

	cmd := exec.Command(c.Daemon, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}

	if err = cmd.Start(); err != nil {
		return fmt.Errorf("error starting %s: %w", n.Name, err)
	}

	n.PID = cmd.Process.Pid
	exited := make(chan struct{})
	n.exited = exited

	// Reap the child when it exits so that a stopped node does not linger as a zombie while the
	// starting process (a test, say) is still running.
	go func() {
		cmd.Wait() //nolint:errcheck // the exit is reported through the node's log

		close(exited)
	}()

	return nil
}

func (c *Cluster) stopAll() {
	for i := range c.Nodes {
		c.Nodes[i].stop(5 * time.Second) //nolint:errcheck // best effort while cleaning up after a failed start
	}
}
