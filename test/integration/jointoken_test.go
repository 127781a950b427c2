package integration

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/rotate"
	"github.com/nodepki/nodepki/pkg/trustd"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/pki"
)

// tokenShape finds anything shaped like a join token in output.
var tokenShape = regexp.MustCompile(`[a-z0-9]{6}\.[a-z0-9]{16}`)

// TestRotateJoinTokenUnderRenewal rotates the join token while the workers renew their node API
// certificate every few seconds (api lifetime 10 s), killing rotate-ca with SIGKILL as each of
// its steps starts and letting every worker renew before rerunning it: no worker ever serves an
// invalid certificate or fails a renewal, the rotation completes with the one token of the plan,
// every worker renews with the new token afterwards, every control plane's trustd refuses a real
// CSR with the old token and signs one with the new, no node logs a token, and secrets.yaml holds
// the new token.
func TestRotateJoinTokenUnderRenewal(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.125.2", 2, 2)
	secrets := filepath.Join(c.Dir, "secrets.yaml")
	planPath := filepath.Join(c.Dir, rotate.DefaultPlanName)

	original, err := bundle.Load(secrets)
	require.NoError(t, err)

	oldToken := original.TrustdInfo.Token

	talosconfig, err := os.ReadFile(c.Talosconfig)
	require.NoError(t, err)

	// Calls go through the first control plane: the workers' trustd endpoint, the control plane
	// that records them as members and so forwards to them.
	//
	// trustd signs the workers' node API certificates with its control plane's api lifetime; the
	// workers' own change makes them ask again at once.
	for _, node := range append(c.ControlPlanes(), workers(c.Nodes)...) {
		out, err := runCLI(t, c, "-e", c.ControlPlanes()[0], "-n", node, "patch", "machineconfig",
			"--patch", `{"machine": {"certificateLifetimes": {"api": "10s"}}}`)
		require.NoError(t, err, out)
	}

	cl := connect(t, c.Talosconfig, c.ControlPlanes()[0])

	for _, w := range workers(c.Nodes) {
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			s, err := apiStatus(t.Context(), cl, w)
			if assert.NoError(ct, err) {
				assert.Less(ct, time.Until(s.NotAfter.Time), 20*time.Second, "%s: the node API certificate lives 10 s", w)
			}
		}, time.Minute, 200*time.Millisecond)
	}

	mon := startRenewalMonitor(t, c)
	mon.waitRenewedSince(t, mon.certificateCounts()) // each worker's first certificate seen

	args := []string{
		"-e", c.ControlPlanes()[0], "-n", strings.Join(c.Addresses(), ","),
		"rotate-ca", "--join-token", "--dry-run=false", "--with-secrets", secrets,
	}

	var planned string

	for _, step := range rotate.Steps[1:] {
		// Every worker renews in the state the previous run left: old token only, new token
		// accepted, new token held, old token refused.
		mon.waitRenewedSince(t, mon.certificateCounts())

		out := runUntilStep(t, c, step, args...)
		t.Logf("killed at %q:\n%s", step, out)
		assert.Empty(t, tokenShape.FindAllString(out, -1), "a token in the output")

		if p, err := rotate.LoadPlan(planPath); err == nil {
			if planned == "" {
				planned = p.Roots.JoinToken.New.Token
			}

			require.Equal(t, planned, p.Roots.JoinToken.New.Token, "a second token was generated")
		} else {
			require.ErrorIs(t, err, os.ErrNotExist)
		}
	}

	require.NotEmpty(t, planned, "the plan was never written")

	out, err := runCLI(t, c, args...)
	require.NoError(t, err, out)
	t.Logf("final run:\n%s", out)
	assert.Contains(t, out, "rotation complete: join-token")
	assert.Empty(t, tokenShape.FindAllString(out, -1), "a token in the output")

	plan, err := rotate.LoadPlan(planPath)
	require.NoError(t, err)
	require.NotNil(t, plan.Completed)
	assert.Equal(t, []rotate.Root{rotate.RootJoinToken}, plan.Roots.List())
	assert.Equal(t, oldToken, plan.Roots.JoinToken.Old.Token)
	assert.Equal(t, planned, plan.Roots.JoinToken.New.Token)

	newToken := plan.Roots.JoinToken.New.Token

	// Every worker renews once more, now that only the new token is accepted.
	mon.waitRenewedSince(t, mon.certificateCounts())
	mon.stop()

	assert.Empty(t, mon.failures(), "a worker's node API certificate was not valid, or a renewal failed")
	t.Logf("node API certificates seen per worker (the first and its renewals): %v", mon.certificateCounts())

	for _, n := range c.Nodes {
		raw, err := safe.StateGetByID[*pki.CertificateStatus](client.WithNode(t.Context(), n.Address), cl.COSI(), pki.CertAPI)
		require.NoError(t, err, n.Address)
		assert.Empty(t, raw.TypedSpec().LastError, n.Address)

		cfg := machineConfig(t, cl, n.Address)
		assert.Equal(t, newToken, cfg.Document().Machine.Token, "%s: machine.token", n.Address)
		assert.Empty(t, cfg.Document().Machine.AcceptedTokens, "%s: machine.acceptedTokens", n.Address)
	}

	// Real CSRs: the old token is refused by every control plane's trustd, the new one signs.
	for i, cp := range c.ControlPlanes() {
		source := netip.MustParseAddr(fmt.Sprintf("127.0.125.%d", 90+i))

		_, err := requestWithToken(t, cp, original.Certs.OS, oldToken, source)
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "%s with the old token: %v", cp, err)

		crt, err := requestWithToken(t, cp, original.Certs.OS, newToken, source)
		require.NoError(t, err, "%s with the new token", cp)
		assert.Equal(t, []string{source.String()}, ipStrings(crt.IPAddresses))
	}

	// No node wrote either token to its log or its audit log.
	for _, n := range c.Nodes {
		for _, path := range []string{n.Log, filepath.Join(n.StateDir, audit.FileName)} {
			data, err := os.ReadFile(path)
			require.NoError(t, err, n.Address)
			assert.NotContains(t, string(data), oldToken, path)
			assert.NotContains(t, string(data), newToken, path)
		}
	}

	after, err := os.ReadFile(c.Talosconfig)
	require.NoError(t, err)
	assert.Equal(t, talosconfig, after, "the talosconfig is untouched by a join-token rotation")

	b, err := bundle.Load(secrets)
	require.NoError(t, err)
	assert.Equal(t, newToken, b.TrustdInfo.Token)
	assert.Equal(t, original.Certs, b.Certs, "the roots are untouched")

	backups, err := filepath.Glob(secrets + ".*.bak")
	require.NoError(t, err)
	require.Len(t, backups, 1)

	backup, err := bundle.Load(backups[0])
	require.NoError(t, err)
	assert.Equal(t, oldToken, backup.TrustdInfo.Token)
}

// TestRotateJoinTokenRefusesBadToken: a plan whose new token has the wrong shape is refused with
// the field named, the token not quoted, and nothing changed.
func TestRotateJoinTokenRefusesBadToken(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.126.2", 1, 0)

	const bad = "NOT-a-token"

	planPath := filepath.Join(t.TempDir(), "plan.yaml")
	require.NoError(t, os.WriteFile(planPath, []byte("version: 1\nroots:\n    join-token:\n        new:\n            token: "+bad+"\n"), 0o600))

	before, err := os.ReadFile(planPath)
	require.NoError(t, err)

	out, err := runCLI(t, c, "rotate-ca", "--join-token", "--dry-run=false", "--plan", planPath)

	var exitErr *exec.ExitError
	require.True(t, errors.As(err, &exitErr), "rotate-ca did not fail: %v\n%s", err, out)
	assert.Contains(t, out, "roots.join-token.new: token: not a valid token: want 6 and 16 characters of [a-z0-9] joined by a dot")
	assert.NotContains(t, out, bad)

	after, err := os.ReadFile(planPath)
	require.NoError(t, err)
	assert.Equal(t, before, after)

	cl := connect(t, c.Talosconfig)
	cfg := machineConfig(t, cl, c.ControlPlanes()[0])
	assert.Empty(t, cfg.Document().Machine.AcceptedTokens)
}

func apiStatus(ctx context.Context, cl *client.Client, node string) (*pki.CertificateStatusSpec, error) {
	res, err := safe.StateGetByID[*pki.CertificateStatus](client.WithNode(ctx, node), cl.COSI(), pki.CertAPI)
	if err != nil {
		return nil, err
	}

	return res.TypedSpec(), nil
}

func machineConfig(t *testing.T, cl *client.Client, node string) *machineconfig.Config {
	t.Helper()

	mc, err := safe.StateGetByID[*config.MachineConfig](client.WithNode(t.Context(), node), cl.COSI(), config.ActiveID)
	require.NoError(t, err, node)

	cfg, err := machineconfig.Parse(mc.TypedSpec().Raw)
	require.NoError(t, err, node)

	return cfg
}

// requestWithToken sends trustd on node a real CSR for source (the request is made from source,
// which names nothing else in the cluster) with the token.
func requestWithToken(t *testing.T, node string, osCA *machineconfig.CertificateAndKey, token string, source netip.Addr) (*x509.Certificate, error) {
	t.Helper()

	ca, err := certs.ParseCertificate(osCA.Crt)
	require.NoError(t, err)

	key, _, err := certs.NewKeyLike(ca.PublicKey)
	require.NoError(t, err)

	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:     pkix.Name{CommonName: "jointoken-probe"},
		IPAddresses: []net.IP{source.AsSlice()},
	}, key)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	_, crtPEM, err := trustd.RequestCertificate(ctx, []string{node}, osCA.Crt, token,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), trustd.FromAddress(source))
	if err != nil {
		return nil, err
	}

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	return crt, nil
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, ip.String())
	}

	return out
}

// renewalMonitor checks every worker continuously: a call dialed directly to the worker (a new
// TLS handshake, which verifies the certificate it serves) must succeed, and its node API
// certificate must be valid, trusted and not failing a renewal. It counts the renewals (serials).
type renewalMonitor struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	problems []string
	serials  map[string]map[string]bool
}

func startRenewalMonitor(t *testing.T, c *cluster.Cluster) *renewalMonitor {
	t.Helper()

	ctx, cancel := context.WithCancel(t.Context())
	m := &renewalMonitor{cancel: cancel, serials: map[string]map[string]bool{}}

	for _, w := range workers(c.Nodes) {
		m.serials[w] = map[string]bool{}

		m.wg.Go(func() {
			cl := connect(t, c.Talosconfig, w)
			ticker := time.NewTicker(100 * time.Millisecond)

			defer ticker.Stop()

			for {
				m.check(ctx, cl, w)

				select {
				case <-ctx.Done():
					return
				case <-ticker.C:
				}
			}
		})
	}

	t.Cleanup(m.stop)

	return m
}

func (m *renewalMonitor) check(ctx context.Context, cl *client.Client, worker string) {
	callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	problem := ""

	if _, err := cl.Node().Version(callCtx, &nodeapi.VersionRequest{}); err != nil {
		problem = fmt.Sprintf("%s: a direct call failed: %v", worker, err)
	} else if s, err := apiStatus(callCtx, cl, worker); err != nil {
		problem = fmt.Sprintf("%s: reading the node API certificate status: %v", worker, err)
	} else {
		switch {
		case s.State != pki.StateValid && s.State != pki.StateRenewing && s.State != pki.StateExpiring:
			problem = fmt.Sprintf("%s: the node API certificate is %s: %s", worker, s.State, s.LastError)
		case !s.Trusted:
			problem = fmt.Sprintf("%s: the node API certificate is not trusted", worker)
		case !time.Now().Before(s.NotAfter.Time):
			problem = fmt.Sprintf("%s: the node API certificate expired at %s", worker, s.NotAfter.Time)
		case s.LastError != "":
			problem = fmt.Sprintf("%s: %s", worker, s.LastError)
		}

		m.mu.Lock()
		m.serials[worker][s.Serial] = true
		m.mu.Unlock()
	}

	if problem == "" || ctx.Err() != nil {
		return
	}

	m.mu.Lock()
	m.problems = append(m.problems, time.Now().Format(time.RFC3339Nano)+" "+problem)
	m.mu.Unlock()
}

// certificateCounts is the number of different node API certificates seen on each worker.
func (m *renewalMonitor) certificateCounts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()

	out := map[string]int{}
	for w, serials := range m.serials {
		out[w] = len(serials)
	}

	return out
}

// waitRenewedSince waits until every worker was seen with a new certificate since the counts were taken.
func (m *renewalMonitor) waitRenewedSince(t *testing.T, counts map[string]int) {
	t.Helper()

	require.Eventually(t, func() bool {
		now := m.certificateCounts()

		for w, n := range counts {
			if now[w] <= n {
				return false
			}
		}

		return true
	}, time.Minute, 100*time.Millisecond, "certificates seen: %v; problems: %v", m.certificateCounts(), m.failures())
}

func (m *renewalMonitor) failures() []string {
	m.mu.Lock()
	defer m.mu.Unlock()

	return append([]string(nil), m.problems...)
}

func (m *renewalMonitor) stop() {
	m.cancel()
	m.wg.Wait()
}
