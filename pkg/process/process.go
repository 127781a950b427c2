// Package process owns the long-running programs nodepkid supervises (etcd, kube-apiserver): each
// runs in its own process group, logs to a file and is recorded in a pidfile, so that it outlives a
// crash of its supervisor and the next supervisor adopts it instead of starting a second one.
package process

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nodepki/nodepki/pkg/atomicfile"
)

// Config is how one supervised program is run.
type Config struct {
	// Name names the program in errors ("etcd", "kube-apiserver").
	Name string
	// Binary is the executable and Args its arguments.
	Binary string
	Args   []string
	// Marker is one of Args that no other instance has (its data directory, say): how an adopted
	// process is recognised as this one, whatever reused its PID.
	Marker string
	// LogFile receives the program's output (appended): a file rather than a pipe, so that the
	// program keeps running when its supervisor dies.
	LogFile string
	// PIDFile records the running process for adoption.
	PIDFile string
}

// Process is a running program, started here or adopted from a previous supervisor.
type Process struct {
	PID int
	// Tag is what the supervisor recorded with the process when it started it: the digest of the
	// files the process loaded at start, which tells it when a restart is due.
	Tag string

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

// Start starts the program in its own process group, so that it outlives its supervisor, and
// records it in the pidfile with tag.
func Start(c Config, tag string) (*Process, error) {
	logFile, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("error opening the %s log file: %w", c.Name, err)
	}

	// The child holds its own descriptor.
	defer logFile.Close()

	cmd := exec.Command(c.Binary, c.Args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	if err = cmd.Start(); err != nil {
		return nil, fmt.Errorf("error starting %s %s: %w", c.Name, c.Binary, err)
	}

	p := &Process{PID: cmd.Process.Pid, Tag: tag, exited: make(chan struct{})}

	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()

	if err = atomicfile.WriteFile(c.PIDFile, fmt.Appendf(nil, "%d\n%s\n", p.PID, tag)); err != nil {
		return nil, errors.Join(fmt.Errorf("error writing the %s pidfile: %w", c.Name, err), p.Stop(context.Background(), 0))
	}

	return p, nil
}

// Adopt takes over the process the pidfile names if it is still running with c.Marker among its
// arguments; it returns nil when there is none (a stale pidfile is removed).
func Adopt(c Config) (*Process, error) {
	data, err := os.ReadFile(c.PIDFile)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}

	if err != nil {
		return nil, fmt.Errorf("error reading the %s pidfile: %w", c.Name, err)
	}

	pid, tag, ok := parsePIDFile(data)
	if !ok {
		return nil, removeStale(c)
	}

	// The PID may have been reused by an unrelated process: only one with our marker is ours.
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)) //nolint:gosec // pid is a parsed integer
	if err != nil || c.Marker == "" || !bytes.Contains(cmdline, []byte("\x00"+c.Marker+"\x00")) {
		return nil, removeStale(c)
	}

	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, removeStale(c)
	}

	p := &Process{PID: pid, Tag: tag, exited: make(chan struct{})}

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

		p.err = fmt.Errorf("the adopted %s process exited", c.Name)
		close(p.exited)
	}()

	return p, nil
}

// parsePIDFile reads what Start writes: the PID, then the tag, one per line.
func parsePIDFile(data []byte) (pid int, tag string, ok bool) {
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")

	pid, err := strconv.Atoi(strings.TrimSpace(lines[0]))
	if err != nil || pid <= 1 {
		return 0, "", false
	}

	if len(lines) > 1 {
		tag = strings.TrimSpace(lines[1])
	}

	return pid, tag, true
}

func removeStale(c Config) error {
	if err := os.Remove(c.PIDFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("error removing the stale %s pidfile: %w", c.Name, err)
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
		return fmt.Errorf("error stopping pid %d: %w", p.PID, err)
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
		return fmt.Errorf("error killing pid %d: %w", p.PID, err)
	}

	<-p.exited

	return nil
}

// logTail is how much of the end of a log LastLogLine reads.
const logTail = 4096

// LastLogLine is the last line written to a log, with its message extracted when it is JSON (as
// etcd writes): what a status shows when the program exits.
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
