package etcd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodepki/nodepki/pkg/atomicfile"
)

// MemberConfig is how one etcd member is run.
type MemberConfig struct {
	// Binary is the etcd executable.
	Binary string
	// DataDir is etcd's --data-dir; it is also how an adopted process is recognised.
	DataDir string
	// PKIDir holds the files named by CAFile, ServerCertFile, ...
	PKIDir string
	// LogFile receives etcd's output (appended): a file rather than a pipe, so that etcd keeps
	// running when its supervisor dies.
	LogFile string
	// PIDFile records the running process for adoption.
	PIDFile string
	// Address is the node address both URLs listen on.
	Address netip.Addr
	// InitialCluster and InitialClusterState are set when the data directory is empty: the
	// member bootstraps a cluster ("new") or joins one ("existing").
	InitialCluster      string
	InitialClusterState string
}

// Args are the etcd arguments: client and peer TLS with certificate authentication, one CA
// file trusted for both.
func (c MemberConfig) Args() []string {
	pki := func(name string) string { return filepath.Join(c.PKIDir, name) }

	args := []string{
		"--name=" + MemberName(c.Address),
		"--data-dir=" + c.DataDir,
		"--listen-client-urls=" + ClientURL(c.Address),
		"--advertise-client-urls=" + ClientURL(c.Address),
		"--listen-peer-urls=" + PeerURL(c.Address),
		"--initial-advertise-peer-urls=" + PeerURL(c.Address),
		"--client-cert-auth",
		"--trusted-ca-file=" + pki(CAFile),
		"--cert-file=" + pki(ServerCertFile),
		"--key-file=" + pki(ServerKeyFile),
		"--peer-client-cert-auth",
		"--peer-trusted-ca-file=" + pki(CAFile),
		"--peer-cert-file=" + pki(PeerCertFile),
		"--peer-key-file=" + pki(PeerKeyFile),
		"--log-level=warn",
	}

	// etcd checks a peer's certificate SANs against the connection's source address. On loopback
	// the kernel sources every connection from 127.0.0.1 whatever address the member listens on,
	// so a local cluster's members would refuse each other; the certificate chain is still verified.
	if c.Address.IsLoopback() {
		args = append(args, "--peer-skip-client-san-verification")
	}

	if c.InitialClusterState != "" {
		args = append(args, "--initial-cluster="+c.InitialCluster, "--initial-cluster-state="+c.InitialClusterState)
	}

	return args
}

// HasData reports whether the member's data directory holds a member (it joined or bootstrapped).
func (c MemberConfig) HasData() bool {
	_, err := os.Stat(filepath.Join(c.DataDir, "member"))

	return err == nil
}

// Process is a running etcd member, started here or adopted from a previous supervisor.
type Process struct {
	PID int
	// TrustBundleDigest is the digest of the CA file the process loaded when it started.
	TrustBundleDigest string

	exited chan struct{}
	err    error
}

// Exited is closed when the process is gone.
func (p *Process) Exited() <-chan struct{} {
	return p.exited
}

// Err is how the process ended, once Exited is closed.
func (p *Process) Err() error {
	<-p.exited

	return p.err
}

// Start starts etcd in its own process group, so that it outlives its supervisor, and records it
// in the pidfile with the digest of the trust bundle it loads.
func Start(c MemberConfig, trustBundleDigest string) (*Process, error) {
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("error creating etcd data directory: %w", err)
	}

	logFile, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("error opening etcd log file: %w", err)
	}

	// The child holds its own descriptor.
	defer logFile.Close()

	cmd := exec.Command(c.Binary, c.Args()...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	if err = cmd.Start(); err != nil {
		return nil, fmt.Errorf("error starting etcd %s: %w", c.Binary, err)
	}

	p := &Process{PID: cmd.Process.Pid, TrustBundleDigest: trustBundleDigest, exited: make(chan struct{})}

	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()

	if err = atomicfile.WriteFile(c.PIDFile, fmt.Appendf(nil, "%d\n%s\n", p.PID, trustBundleDigest)); err != nil {
		return nil, errors.Join(fmt.Errorf("error writing etcd pidfile: %w", err), p.Stop(context.Background(), 0))
	}

	return p, nil
}

// Adopt takes over the etcd process the pidfile names if it is still running with this data
// directory; it returns nil when there is none (a stale pidfile is removed).
func Adopt(c MemberConfig) (*Process, error) {
	data, err := os.ReadFile(c.PIDFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}

	if err != nil {
		return nil, fmt.Errorf("error reading etcd pidfile: %w", err)
	}

	pid, digest, ok := parsePIDFile(data)
	if !ok {
		return nil, removeStale(c.PIDFile)
	}

	// The PID may have been reused by an unrelated process: only an etcd on our data directory is ours.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)) //nolint:gosec // pid is a parsed integer
	if err != nil || !bytes.Contains(cmdline, []byte("\x00--data-dir="+c.DataDir+"\x00")) {
		return nil, removeStale(c.PIDFile)
	}

	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, removeStale(c.PIDFile)
	}

	p := &Process{PID: pid, TrustBundleDigest: digest, exited: make(chan struct{})}

	go func() {
		defer unix.Close(fd)

		// A pidfd becomes readable when the process exits; this works for a process that is not
		// our child, which cannot be waited for.
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}} //nolint:gosec // a descriptor fits an int32

		for {
			if _, pollErr := unix.Poll(fds, -1); pollErr == nil || !errors.Is(pollErr, unix.EINTR) {
				break
			}
		}

		p.err = errors.New("the adopted etcd process exited")
		close(p.exited)
	}()

	return p, nil
}

// parsePIDFile reads what Start writes: the PID, then the trust bundle digest, one per line.
func parsePIDFile(data []byte) (pid int, digest string, ok bool) {
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")

	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 1 {
		return 0, "", false
	}

	if len(lines) > 1 {
		digest = strings.TrimSpace(lines[1])
	}

	return pid, digest, true
}

func removeStale(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("error removing stale etcd pidfile: %w", err)
	}

	return nil
}

// Stop sends SIGTERM to the process group and waits for the process to exit; after grace (or
// when ctx is done) it sends SIGKILL. A zero grace kills at once.
func (p *Process) Stop(ctx context.Context, grace time.Duration) error {
	signal := syscall.SIGTERM
	if grace == 0 {
		signal = syscall.SIGKILL
	}

	if err := syscall.Kill(-p.PID, signal); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("error stopping etcd (pid %d): %w", p.PID, err)
	}

	timer := time.NewTimer(grace)
	defer timer.Stop()

	select {
	case <-p.exited:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}

	if err := syscall.Kill(-p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("error killing etcd (pid %d): %w", p.PID, err)
	}

	<-p.exited

	return nil
}

// logTail is how much of the end of etcd's log LastLogLine reads.
const logTail = 4096

// LastLogLine is the last line etcd wrote to its log, with its message extracted from etcd's JSON
// when it is JSON: what a status shows when etcd exits.
func LastLogLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}

	defer f.Close()

	info, err := f.Stat()
	if err != nil {
		return ""
	}

	offset := max(info.Size()-logTail, 0)
	buf := make([]byte, info.Size()-offset)

	if _, err = f.ReadAt(buf, offset); err != nil {
		return ""
	}

	lines := strings.Split(strings.TrimSpace(string(buf)), "\n")
	last := lines[len(lines)-1]

	var entry struct {
		Msg   string `json:"msg"`
		Error string `json:"error"`
	}

	if json.Unmarshal([]byte(last), &entry) == nil && entry.Msg != "" {
		if entry.Error != "" {
			return entry.Msg + ": " + entry.Error
		}

		return entry.Msg
	}

	return last
}
