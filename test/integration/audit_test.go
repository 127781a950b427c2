package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/pkg/rotate"
)

// auditEvents reads the audit log of nodes with `nodepkictl audit -o json`, keyed by node.
func auditEvents(t *testing.T, c *cluster.Cluster, nodes ...string) map[string][]audit.Event {
	t.Helper()

	cmd := nodepkictlCmd(c, "-n", strings.Join(nodes, ","), "audit", "-o", "json")

	var stderr bytes.Buffer
	cmd.Stderr = &stderr

	out, err := cmd.Output()
	require.NoError(t, err, stderr.String())

	events := map[string][]audit.Event{}

	for line := range strings.Lines(string(out)) {
		e, err := audit.ParseLine([]byte(strings.TrimSuffix(line, "\n")))
		require.NoError(t, err, line)

		events[e.Node] = append(events[e.Node], e)
	}

	return events
}

func ofType(events []audit.Event, typ string) []audit.Event {
	var out []audit.Event

	for _, e := range events {
		if e.Type == typ {
			out = append(out, e)
		}
	}

	return out
}

// assertAdminCaller checks the caller of an event made with the cluster's admin talosconfig.
func assertAdminCaller(t *testing.T, e audit.Event, admin *certsOfContext) {
	t.Helper()

	require.NotNil(t, e.Caller, "%s has a caller", e.Type)
	assert.Equal(t, "O=os:admin", e.Caller.Subject)
	assert.Equal(t, admin.serial, e.Caller.Serial)
	assert.Equal(t, []string{role.Admin}, e.Caller.Roles)
	assert.Contains(t, e.Caller.Address, "127.0.0.1:", "the address the CLI connected from")
}

// certsOfContext is what a test needs to know of a talosconfig's credential.
type certsOfContext struct {
	serial, fingerprint string
	// secrets are strings of its key that must appear in no log.
	secrets []string
}

func credentialOf(t *testing.T, talosconfig string) *certsOfContext {
	t.Helper()

	cctx := currentContext(t, talosconfig)

	crtPEM, err := cctx.CrtPEM()
	require.NoError(t, err)

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	keyPEM, err := cctx.KeyPEM()
	require.NoError(t, err)

	return &certsOfContext{
		serial:      revocation.FormatSerial(crt.SerialNumber),
		fingerprint: certs.Fingerprint(crt),
		secrets:     []string{cctx.Key[:40], secretLine(keyPEM)},
	}
}

// secretLine is the first base64 line inside a PEM block (its key material).
func secretLine(pemData []byte) string {
	lines := strings.Split(string(pemData), "\n")
	if len(lines) < 2 {
		return string(pemData)
	}

	return lines[1]
}

// TestAuditLog: the events of a `config new`, a patch, a trustd signing (a worker joining), refused
// calls and a revoke are in the nodes' audit logs with who did what, and no PEM, key or token is
// in any log file; os:reader and os:operator are refused `audit`; a node killed with SIGKILL while
// patches are applied restarts with its audit log intact, and a torn last line is skipped with a
// warning.
func TestAuditLog(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.130.2", 1, 1)
	controlPlane, worker := c.ControlPlanes()[0], c.Addresses()[1]
	admin := credentialOf(t, c.Talosconfig)
	dir := t.TempDir()

	// config new, for a reader and an operator.
	creds := map[string]string{}

	for _, r := range []string{role.Reader, role.Operator} {
		path := filepath.Join(dir, strings.TrimPrefix(r, "os:")+"-talosconfig")
		out, err := runCLI(t, c, "-n", controlPlane, "config", "new", path, "--roles", r, "--crt-ttl", "2h")
		require.NoError(t, err, out)

		creds[r] = path
	}

	reader := credentialOf(t, creds[role.Reader])

	// A patch of the worker, through the control plane.
	out, err := runCLI(t, c, "-n", worker, "patch", "machineconfig", "--patch", `{"machine": {"certSANs": ["audit.example.com"]}}`)
	require.NoError(t, err, out)

	// Refused calls: reader and operator may not read the audit log, on either node.
	for _, r := range []string{role.Reader, role.Operator} {
		for _, node := range []string{controlPlane, worker} {
			out, err := exec.Command(nodepkictl, "--talosconfig", creds[r], "-n", node, "audit").CombinedOutput()
			require.Error(t, err, "%s reads the audit log of %s: %s", r, node, out)
			assert.Contains(t, string(out), "PermissionDenied")
			assert.Contains(t, string(out), "Audit needs role os:admin; the caller's roles: "+r)
		}
	}

	// A revoke.
	out, err = runCLI(t, c, "revoke", "--talosconfig-file", creds[role.Reader], "--reason", "audit test")
	require.NoError(t, err, out)

	events := auditEvents(t, c, controlPlane, worker)

	issued := ofType(events[controlPlane], audit.TypeClientIssued)
	require.Len(t, issued, 2, "one per config new")
	assertAdminCaller(t, issued[0], admin)
	assert.Equal(t, []string{role.Reader}, issued[0].Certificate.Roles)
	assert.Equal(t, reader.serial, issued[0].Certificate.Serial)
	assert.Equal(t, reader.fingerprint, issued[0].Certificate.Fingerprint)
	assert.Equal(t, "2h0m0s", issued[0].Certificate.Lifetime)
	assert.WithinDuration(t, time.Now().Add(2*time.Hour), issued[0].Certificate.NotAfter, time.Minute)
	assert.Equal(t, []string{role.Operator}, issued[1].Certificate.Roles)

	patched := ofType(events[worker], audit.TypeConfigPatched)
	require.Len(t, patched, 2, "the patch, then the revoke")
	assertAdminCaller(t, patched[0], admin)
	assert.Contains(t, patched[0].Caller.ForwardedBy, "O=os:impersonator", "the control plane that forwarded it")
	assert.Equal(t, []string{"machine.certSANs"}, patched[0].Changed)
	assert.Equal(t, []string{"machine.revokedCertificates"}, patched[1].Changed)

	signed := ofType(events[controlPlane], audit.TypeTrustdSigned)
	require.NotEmpty(t, signed, "the worker joined")
	assert.Equal(t, worker, signed[0].Certificate.Requester)
	assert.NotEmpty(t, signed[0].Certificate.CommonName)
	assert.Contains(t, signed[0].Certificate.IPAddresses, worker)
	assert.NotEmpty(t, signed[0].Certificate.Serial)
	assert.True(t, slices.ContainsFunc(signed, func(e audit.Event) bool {
		return slices.Contains(e.Certificate.DNSNames, "audit.example.com")
	}), "the worker's certificate renewed with the patched SAN")

	refused := ofType(events[controlPlane], audit.TypeRefused)
	require.NotEmpty(t, refused)
	assert.Equal(t, audit.ServiceAPI, refused[0].Refusal.Service)
	assert.Equal(t, "127.0.0.1", refused[0].Refusal.Peer)
	assert.Equal(t, nodeapi.NodeService_Audit_FullMethodName, refused[0].Refusal.Method)
	assert.Contains(t, refused[0].Refusal.Reason, "needs role os:admin")
	require.NotEmpty(t, ofType(events[worker], audit.TypeRefused), "a forwarded call is refused, and recorded, by its target")

	for _, node := range []string{controlPlane, worker} {
		revoked := ofType(events[node], audit.TypeRevocationAdded)
		require.Len(t, revoked, 1, node)
		assertAdminCaller(t, revoked[0], admin)
		require.Len(t, revoked[0].Revocations, 1)
		assert.Equal(t, reader.fingerprint, revoked[0].Revocations[0].Fingerprint)
		assert.Equal(t, "audit test", revoked[0].Revocations[0].Reason)
	}

	// The readable form.
	out, err = runCLI(t, c, "-n", controlPlane, "audit", "--since", "10m")
	require.NoError(t, err, out)
	assert.Contains(t, out, "client.issued")
	assert.Contains(t, out, "caller=O=os:admin roles=os:admin serial="+admin.serial)
	assert.Contains(t, out, "trustd.signed")
	assert.Contains(t, out, "requester="+worker)

	// A rotation: each step is a patch the nodes record with the root change it made.
	planPath := filepath.Join(dir, "plan.yaml")
	out, err = runCLI(t, c, "rotate-ca", "--kubernetes", "--dry-run=false", "--plan", planPath)
	require.NoError(t, err, out)

	plan, err := rotate.LoadPlan(planPath)
	require.NoError(t, err)

	events = auditEvents(t, c, controlPlane, worker)

	for _, node := range []string{controlPlane, worker} {
		var steps []string

		for _, e := range ofType(events[node], audit.TypeRotationStep) {
			assertAdminCaller(t, e, admin)

			for _, r := range e.Roots {
				require.Equal(t, audit.RootKubernetes, r.Root, node)
				steps = append(steps, r.Step)

				switch r.Step {
				case audit.StepIssuingChanged:
					assert.Equal(t, plan.Roots.Kubernetes.Old.Fingerprint, r.From, node)
					assert.Equal(t, plan.Roots.Kubernetes.New.Fingerprint, r.To, node)
				default:
					// The new CA is accepted first; when it issues, the old one is accepted instead.
					assert.Subset(t, []string{plan.Roots.Kubernetes.Old.Fingerprint, plan.Roots.Kubernetes.New.Fingerprint}, r.Fingerprints, node)
				}
			}
		}

		t.Logf("%s: rotation steps %v", node, steps)
		require.NotEmpty(t, steps, node)
		assert.Equal(t, audit.StepAcceptedAdded, steps[0], "%s: the new CA is trusted first", node)
		assert.Equal(t, []string{plan.Roots.Kubernetes.New.Fingerprint}, ofType(events[node], audit.TypeRotationStep)[0].Roots[0].Fingerprints, node)
		assert.Contains(t, steps, audit.StepIssuingChanged, node)
		assert.Equal(t, audit.StepAcceptedRemoved, steps[len(steps)-1], "%s: the old CA goes last", node)
	}

	assertNoSecrets(t, c, admin, reader, &certsOfContext{secrets: []string{secretLine(plan.Roots.Kubernetes.New.Key)}})

	killedWhilePatching(t, c, worker)
}

// assertNoSecrets scans every audit log file of every node for PEM, the join token and key bytes.
func assertNoSecrets(t *testing.T, c *cluster.Cluster, creds ...*certsOfContext) {
	t.Helper()

	cpConfig, err := os.ReadFile(c.Nodes[0].Config)
	require.NoError(t, err)

	cfg, err := machineconfig.Parse(cpConfig)
	require.NoError(t, err)

	doc := cfg.Document()
	require.NotEmpty(t, doc.Machine.Token)

	forbidden := []string{
		"-----BEGIN", "PRIVATE KEY", doc.Machine.Token,
		base64.StdEncoding.EncodeToString(doc.Machine.CA.Key)[:40], secretLine(doc.Machine.CA.Key),
	}

	for _, s := range []string{doc.Cluster.Token, doc.Cluster.Secret} {
		if s != "" {
			forbidden = append(forbidden, s)
		}
	}

	for _, cr := range creds {
		forbidden = append(forbidden, cr.secrets...)
	}

	for _, n := range c.Nodes {
		files, err := filepath.Glob(filepath.Join(n.StateDir, audit.FileName+"*"))
		require.NoError(t, err)
		require.NotEmpty(t, files, n.Address)

		for _, f := range files {
			info, err := os.Stat(f)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), f)

			data, err := os.ReadFile(f)
			require.NoError(t, err)

			for _, s := range forbidden {
				require.NotEmpty(t, s)
				assert.NotContains(t, string(data), s, "%s holds a secret", f)
			}
		}
	}
}

// killedWhilePatching applies patches to node back to back, kills it with SIGKILL in the middle
// of them, and checks its audit log: readable as the crash left it, with every patch that was
// answered; then, with a torn last line added (what a crash in the middle of a write leaves), the
// restarted node still serves the whole log, skipping that line with a warning.
func killedWhilePatching(t *testing.T, c *cluster.Cluster, node string) {
	t.Helper()

	cl := connect(t, c.Talosconfig)

	var applied atomic.Int64

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})

	go func() {
		defer close(done)

		for i := 0; ctx.Err() == nil; i++ {
			patch := fmt.Sprintf(`{"machine": {"certSANs": ["audit.example.com", "kill-%d.example.com"]}}`, i)

			callCtx, callCancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := cl.Node().ApplyConfiguration(client.WithNode(callCtx, node), &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{[]byte(patch)}})
			callCancel()

			if err == nil {
				applied.Add(1)
			}
		}
	}()

	for applied.Load() < 5 {
		select {
		case <-done:
			t.Fatal("the patch loop ended")
		case <-time.After(10 * time.Millisecond):
		}
	}

	require.NoError(t, c.Kill(node))
	cancel()
	<-done

	n, err := c.Node(node)
	require.NoError(t, err)

	path := filepath.Join(n.StateDir, audit.FileName)

	countPatches := func(data []byte) (patches int, warnings []string) {
		require.NoError(t, audit.ReadLines(bytes.NewReader(data), audit.FileName, time.Time{}, func(line audit.Line) error {
			switch {
			case line.Warning != "":
				warnings = append(warnings, line.Warning)
			case line.Event.Type == audit.TypeConfigPatched:
				patches++
			}

			return nil
		}))

		return patches, warnings
	}

	data, err := os.ReadFile(path)
	require.NoError(t, err)

	before, _ := countPatches(data)
	// Two patches before the loop (the SAN and the revocation), then every one that was answered.
	assert.GreaterOrEqual(t, before, 2+int(applied.Load()), "every patch answered is in the log")

	// What a crash in the middle of a write leaves: the start of a line.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	_, err = f.WriteString(`{"time":"2026-11-29T20:00:00Z","type":"config.patched","caller":{"subj`)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	require.NoError(t, c.Start(node))

	waitCtx, waitCancel := context.WithTimeout(t.Context(), time.Minute)
	defer waitCancel()

	require.NoError(t, c.WaitReady(waitCtx, io.Discard))

	cmd := nodepkictlCmd(c, "-n", node, "audit")

	var stderr bytes.Buffer
	cmd.Stderr = &stderr

	out, err := cmd.Output()
	require.NoError(t, err, "a torn line is never a failure: %s", stderr.String())
	assert.Contains(t, stderr.String(), "warning: "+node+": audit.log line ")
	assert.Contains(t, stderr.String(), "skipped")
	assert.GreaterOrEqual(t, strings.Count(string(out), audit.TypeConfigPatched), before, "the restarted node keeps its log")

	data, err = os.ReadFile(path)
	require.NoError(t, err)

	after, warnings := countPatches(data)
	assert.Equal(t, before, after)
	assert.Len(t, warnings, 1, "the torn line only")
}
