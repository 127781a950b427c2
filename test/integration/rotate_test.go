package integration

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/pkg/rotate"
	"github.com/nodepki/nodepki/resources/pki"
)

// TestRotateOSUnderLoad rotates the OS CA while clients call every node, directly and through
// the control plane, each call with a new connection and the talosconfig as it is on disk at
// that moment: no call may fail. A watch opened before the rotation must survive it and see the
// reissued certificates; afterwards the old talosconfig is refused by every node.
func TestRotateOSUnderLoad(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.10.2", 1, 2)

	oldTalosconfig := filepath.Join(t.TempDir(), "old-talosconfig")
	copyFile(t, c.Talosconfig, oldTalosconfig)

	watch := startWatch(t, c)
	watch.waitFor(t, func(events []watchEvent) bool { return len(apiIssuers(events)) == len(c.Nodes) })

	load := startLoad(t, c)
	load.waitCalls(t, 20)

	secrets := filepath.Join(c.Dir, "secrets.yaml")

	start := time.Now()
	out, err := runCLI(t, c, "rotate-ca", "--os", "--dry-run=false", "--with-secrets", secrets)
	require.NoError(t, err, out)
	t.Logf("rotation took %s:\n%s", time.Since(start).Round(time.Millisecond), out)

	// A few more calls with the final talosconfig, then stop.
	load.waitCalls(t, load.ok.Load()+20)
	load.stop()

	assert.Zero(t, load.failed.Load(), "failed calls during the rotation:\n%s", strings.Join(load.failures(), "\n"))
	t.Logf("load: %d calls, %d failed, with %d talosconfigs", load.ok.Load(), load.failed.Load(), load.configs())
	assert.Equal(t, 3, load.configs(), "the calls used the old, the transitional and the final talosconfig")

	plan, err := rotate.LoadPlan(filepath.Join(c.Dir, rotate.DefaultPlanName))
	require.NoError(t, err)
	require.NotNil(t, plan.Completed)

	newCA := plan.Roots.OS.New.Fingerprint

	// The watch is still the one opened before the rotation, and it saw every node's node API
	// certificate reissued by the new CA.
	require.NoError(t, syscall.Kill(watch.cmd.Process.Pid, 0), "the watch process exited")
	assert.NotContains(t, watch.stderr.String(), "interrupted", "the watch was re-established")
	watch.waitFor(t, func(events []watchEvent) bool {
		issuers := apiIssuers(events)

		return len(issuers) == len(c.Nodes) && !slices.ContainsFunc(c.Addresses(), func(n string) bool { return issuers[n] != newCA })
	})

	// The old talosconfig is refused by every node; so is its client certificate alone, even by
	// a client that trusts the new CA (the node itself refuses it).
	oldCfg, err := clientconfig.Open(oldTalosconfig)
	require.NoError(t, err)

	oldCtx, err := oldCfg.Current()
	require.NoError(t, err)

	oldWithNewTrust := *oldCtx
	oldWithNewTrust.CA = b64(plan.Roots.OS.New.Crt)

	for _, node := range c.Addresses() {
		_, err := version(t, oldCtx, node)
		assert.Error(t, err, "%s accepts the old talosconfig", node)

		_, err = version(t, &oldWithNewTrust, node)
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "%s: %v", node, err)
	}

	// secrets.yaml holds the new CA, the old one is kept beside it.
	b, err := bundle.Load(secrets)
	require.NoError(t, err)
	assert.Equal(t, newCA, fingerprint(t, b.Certs.OS.Crt))

	backups, err := filepath.Glob(secrets + ".*.bak")
	require.NoError(t, err)
	assert.Len(t, backups, 1)

	assertConverged(t, c, plan)
}

// TestRotateResumesAfterSIGKILL kills rotate-ca once after each of its steps and reruns the
// same command: the rotation completes with the one plan (one new CA per root) and every node
// converges. After each kill the talosconfig on disk still works against every node.
func TestRotateResumesAfterSIGKILL(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.11.2", 1, 2)
	planPath := filepath.Join(c.Dir, rotate.DefaultPlanName)

	var planned *rotate.Plan

	for _, step := range rotate.Steps[1:] {
		out := runUntilStep(t, c, step, "rotate-ca", "--dry-run=false")
		t.Logf("killed at %q:\n%s", step, out)

		if p, err := rotate.LoadPlan(planPath); err == nil {
			if planned == nil {
				planned = p
			}

			for _, root := range planned.Roots.List() {
				require.Equal(t, planned.Roots.Get(root).New, p.Roots.Get(root).New, "%s: a second CA was generated", root)
			}
		} else {
			require.ErrorIs(t, err, os.ErrNotExist)
		}

		for _, node := range c.Addresses() {
			cctx := currentContext(t, c.Talosconfig)
			_, err := version(t, cctx, node)
			require.NoError(t, err, "after the kill at %q, the talosconfig does not work against %s", step, node)
		}
	}

	require.NotNil(t, planned, "the plan was never written")

	out, err := runCLI(t, c, "rotate-ca", "--dry-run=false")
	require.NoError(t, err, out)
	t.Logf("final run:\n%s", out)

	final, err := rotate.LoadPlan(planPath)
	require.NoError(t, err)
	require.NotNil(t, final.Completed)
	assert.Equal(t, planned.Roots, final.Roots)
	assert.Equal(t, []rotate.Root{rotate.RootOS, rotate.RootKubernetes}, final.Roots.List())

	assertConverged(t, c, final)
}

// TestRotateEachOtherRoot rotates the kubernetes, aggregator, etcd and service-account roots in
// turn: each must end with every leaf from the new root and the old one gone everywhere.
func TestRotateEachOtherRoot(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.12.2", 1, 2)

	for _, root := range []rotate.Root{rotate.RootKubernetes, rotate.RootAggregator, rotate.RootEtcd, rotate.RootServiceAccount} {
		t.Run(string(root), func(t *testing.T) {
			planPath := filepath.Join(t.TempDir(), "plan.yaml")

			out, err := runCLI(t, c, "rotate-ca", "--"+string(root), "--dry-run=false", "--plan", planPath)
			require.NoError(t, err, out)

			plan, err := rotate.LoadPlan(planPath)
			require.NoError(t, err)
			assert.Equal(t, []rotate.Root{root}, plan.Roots.List())

			assertConverged(t, c, plan)
		})
	}
}

// assertConverged checks every node through the API: each rotated root lists the new CA (or key)
// only and issues with it, and every leaf of it is issued by it and trusted.
func assertConverged(t *testing.T, c *cluster.Cluster, plan *rotate.Plan) {
	t.Helper()

	cl := connect(t, c.Talosconfig)

	for _, n := range c.Nodes {
		ctx := client.WithNode(t.Context(), n.Address)

		accepted, err := safe.StateListAll[*pki.AcceptedCA](ctx, cl.COSI())
		require.NoError(t, err, n.Address)

		statuses, err := safe.StateListAll[*pki.CertificateStatus](ctx, cl.COSI())
		require.NoError(t, err, n.Address)

		for _, root := range plan.Roots.List() {
			newFP := plan.Roots.Get(root).New.Fingerprint

			spec, ok := accepted.Find(func(a *pki.AcceptedCA) bool { return a.Metadata().ID() == string(root) })
			if !ok {
				// Workers hold no etcd, aggregator or service-account root.
				assert.Equal(t, "worker", n.Type, "%s has no %s root", n.Address, root)

				continue
			}

			assert.Equal(t, []string{newFP}, spec.TypedSpec().Fingerprints, "%s %s", n.Address, root)
			assert.Equal(t, newFP, spec.TypedSpec().IssuingFingerprint, "%s %s", n.Address, root)

			leaves := 0

			for s := range statuses.All() {
				if s.TypedSpec().Root != string(root) {
					continue
				}

				leaves++

				assert.Equal(t, newFP, s.TypedSpec().IssuerFingerprint, "%s %s", n.Address, s.Metadata().ID())
				assert.True(t, s.TypedSpec().Trusted, "%s %s", n.Address, s.Metadata().ID())
				assert.Equal(t, pki.StateValid, s.TypedSpec().State, "%s %s", n.Address, s.Metadata().ID())
			}

			if n.Type != "worker" && root != rotate.RootServiceAccount {
				assert.NotZero(t, leaves, "%s: no %s leaf", n.Address, root)
			}
		}
	}
}

// runUntilStep runs nodepkictl and SIGKILLs it as soon as it announces the step (so right after
// the previous step completed); it returns what it printed.
func runUntilStep(t *testing.T, c *cluster.Cluster, step string, args ...string) string {
	t.Helper()

	cmd := nodepkictlCmd(c, args...)

	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)

	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())

	var (
		out    strings.Builder
		killed bool
	)

	scanner := bufio.NewScanner(stdout)
	for scanner.Scan() {
		line := scanner.Text()
		out.WriteString(line + "\n")

		if strings.HasPrefix(line, "> "+step+":") {
			require.NoError(t, cmd.Process.Kill())

			killed = true

			break
		}
	}

	io.Copy(io.Discard, stdout) //nolint:errcheck // drain until the process is gone

	err = cmd.Wait()
	require.True(t, killed, "rotate-ca ended before step %q: %v\n%s", step, err, out.String())

	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		ws, _ := exitErr.Sys().(syscall.WaitStatus)
		require.Equal(t, syscall.SIGKILL, ws.Signal(), "rotate-ca was not killed: %v", err)
	}

	return out.String()
}

// version calls Version on node, dialed directly, with a talosconfig context.
func version(t *testing.T, cctx *clientconfig.Context, node string) (*nodeapi.VersionResponse, error) {
	t.Helper()

	cl, err := client.New(t.Context(), client.ClientOptions{Context: cctx, Endpoints: []string{node}})
	require.NoError(t, err)

	defer cl.Close()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	return cl.Node().Version(ctx, &nodeapi.VersionRequest{})
}

func currentContext(t *testing.T, path string) *clientconfig.Context {
	t.Helper()

	cfg, err := clientconfig.Open(path)
	require.NoError(t, err)

	cctx, err := cfg.Current()
	require.NoError(t, err)

	return cctx
}

// load calls every node continuously, each call with a new client made from the talosconfig as
// it is on disk at that moment.
type load struct {
	ok, failed atomic.Int64
	cancel     context.CancelFunc
	wg         sync.WaitGroup

	mu     sync.Mutex
	errors []string
	// used counts the successful calls per talosconfig content.
	used map[string]int
}

type loadTarget struct {
	endpoint, node string
}

func startLoad(t *testing.T, c *cluster.Cluster) *load {
	t.Helper()

	ctx, cancel := context.WithCancel(t.Context())
	l := &load{cancel: cancel, used: map[string]int{}}

	var targets []loadTarget

	for _, node := range c.Addresses() {
		// Directly, and through the control plane (forwarded).
		targets = append(targets, loadTarget{endpoint: node}, loadTarget{endpoint: c.ControlPlanes()[0], node: node})
	}

	for _, target := range targets {
		l.wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				err := l.call(ctx, c.Talosconfig, target, i%2 == 0)

				switch {
				case ctx.Err() != nil:
				case err != nil:
					l.failed.Add(1)
					l.mu.Lock()
					l.errors = append(l.errors, fmt.Sprintf("%s via %s: %v", target.node, target.endpoint, err))
					l.mu.Unlock()
				default:
					l.ok.Add(1)
				}
			}
		})
	}

	t.Cleanup(l.stop)

	return l
}

func (l *load) call(ctx context.Context, talosconfig string, target loadTarget, useVersion bool) error {
	data, err := os.ReadFile(talosconfig)
	if err != nil {
		return err
	}

	cfg, err := clientconfig.Parse(data)
	if err != nil {
		return err
	}

	cl, err := client.New(ctx, client.ClientOptions{Config: cfg, Endpoints: []string{target.endpoint}})
	if err != nil {
		return err
	}

	defer cl.Close()

	callCtx, cancel := context.WithTimeout(client.WithNode(ctx, target.node), 10*time.Second)
	defer cancel()

	if useVersion {
		_, err = cl.Node().Version(callCtx, &nodeapi.VersionRequest{})
	} else {
		_, err = safe.StateGetByID[*pki.CertificateStatus](callCtx, cl.COSI(), pki.CertAPI)
	}

	if err == nil {
		l.mu.Lock()
		l.used[string(data)]++
		l.mu.Unlock()
	}

	return err
}

// configs is the number of different talosconfigs calls succeeded with.
func (l *load) configs() int {
	l.mu.Lock()
	defer l.mu.Unlock()

	return len(l.used)
}

func (l *load) waitCalls(t *testing.T, n int64) {
	t.Helper()

	require.Eventually(t, func() bool { return l.ok.Load() >= n || l.failed.Load() > 0 }, time.Minute, 10*time.Millisecond)
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func (l *load) failures() []string {
	l.mu.Lock()
	defer l.mu.Unlock()

	return slices.Clone(l.errors)
}

// watch is a running `nodepkictl get certificatestatuses -w -o json`.
type watch struct {
	cmd    *exec.Cmd
	stderr syncBuffer

	mu     sync.Mutex
	events []watchEvent
}

type watchEvent struct {
	Node     string `json:"node"`
	Event    string `json:"event"`
	Metadata struct {
		ID string `json:"id"`
	} `json:"metadata"`
	Spec pki.CertificateStatusSpec `json:"spec"`
}

func startWatch(t *testing.T, c *cluster.Cluster) *watch {
	t.Helper()

	w := &watch{cmd: nodepkictlCmd(c, "get", "certificatestatuses", "--watch", "-o", "json")}
	w.cmd.Stderr = &w.stderr

	stdout, err := w.cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, w.cmd.Start())

	done := make(chan struct{})

	go func() {
		defer close(done)

		dec := json.NewDecoder(stdout)

		for {
			var ev watchEvent
			if dec.Decode(&ev) != nil {
				return
			}

			w.mu.Lock()
			w.events = append(w.events, ev)
			w.mu.Unlock()
		}
	}()

	t.Cleanup(func() {
		w.cmd.Process.Kill() //nolint:errcheck // the watcher may have exited already
		<-done
		w.cmd.Wait() //nolint:errcheck // killed on purpose: the exit status says nothing
	})

	return w
}

func (w *watch) waitFor(t *testing.T, cond func([]watchEvent) bool) {
	t.Helper()

	require.Eventually(t, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()

		return cond(w.events)
	}, 30*time.Second, 20*time.Millisecond, "watch output:\n%s", w.stderr.String())
}

// apiIssuers maps each node to the issuer of the last node API certificate the watch printed.
func apiIssuers(events []watchEvent) map[string]string {
	out := map[string]string{}

	for _, ev := range events {
		if ev.Metadata.ID == pki.CertAPI && ev.Spec.IssuerFingerprint != "" {
			out[ev.Node] = ev.Spec.IssuerFingerprint
		}
	}

	return out
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()

	data, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, data, 0o600))
}

func fingerprint(t *testing.T, crtPEM []byte) string {
	t.Helper()

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	return certs.Fingerprint(crt)
}

func b64(data []byte) string {
	return base64.StdEncoding.EncodeToString(data)
}
