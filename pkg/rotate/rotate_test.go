package rotate

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
)

// run is one rotate-ca run against a test cluster; files live in dir.
type run struct {
	tc          *testCluster
	dir         string
	talosconfig string
	plan        string
	opts        Options
}

func newRun(t *testing.T, tc *testCluster, roots ...Root) *run {
	t.Helper()

	dir := t.TempDir()
	r := &run{tc: tc, dir: dir, talosconfig: filepath.Join(dir, "talosconfig"), plan: filepath.Join(dir, DefaultPlanName)}

	cfg := &clientconfig.Config{Context: "test", Contexts: map[string]*clientconfig.Context{"test": tc.context}}
	require.NoError(t, cfg.Save(r.talosconfig))

	r.opts = Options{
		Roots:           roots,
		Nodes:           tc.nodes,
		Endpoints:       tc.context.Endpoints,
		PlanPath:        r.plan,
		TalosconfigPath: r.talosconfig,
		ContextName:     "test",
		WaitTimeout:     5 * time.Second,
		ClientGrace:     time.Millisecond,
	}

	return r
}

// exec runs the rotation with the talosconfig as it is on disk, as a new command would.
func (r *run) exec(t *testing.T) (string, error) {
	t.Helper()

	cfg, err := clientconfig.Open(r.talosconfig)
	require.NoError(t, err)

	opts := r.opts
	opts.Context = cfg.Contexts["test"]

	var out bytes.Buffer

	opts.Out = &out

	err = Run(t.Context(), r.tc.fake, opts)

	return out.String(), err
}

func (r *run) loadPlan(t *testing.T) *Plan {
	t.Helper()

	p, err := LoadPlan(r.plan)
	require.NoError(t, err)

	return p
}

// assertConverged checks that every node runs with the plan's new roots only, every leaf of
// them issued by the new root and trusted, and that the talosconfig works with the new CA only.
func assertConverged(t *testing.T, r *run, plan *Plan) {
	t.Helper()

	f := r.tc.fake

	for _, name := range r.tc.nodes {
		n := f.nodes[name]
		accepted := f.accepted(n)

		for _, root := range plan.Roots.List() {
			rp := plan.Roots.Get(root)

			rc, err := readRoot(n.cfg.Document(), root)
			require.NoError(t, err)

			if !rc.present {
				continue
			}

			phase, err := derivePhase(root, rc, rp.Old.Fingerprint, rp.New.Fingerprint)
			require.NoError(t, err)
			assert.Equal(t, PhaseRetired, phase, "%s %s", name, root)
			assert.Empty(t, rc.accepted, "%s %s: accepted list should be empty again", name, root)

			if root == RootJoinToken {
				assert.Equal(t, rp.New.Token, rc.issuingToken, "%s: the new join token", name)

				continue
			}

			assert.Equal(t, []string{rp.New.Fingerprint}, accepted[root].Fingerprints, "%s %s", name, root)

			if len(rc.issuingKey) > 0 {
				assert.Equal(t, []byte(rp.New.Key), rc.issuingKey, "%s %s: the new key issues", name, root)
			}

			for id, leaf := range n.leaves {
				if leaf.root == root {
					assert.Equal(t, rp.New.Fingerprint, leaf.issuer, "%s leaf %s", name, id)
				}
			}
		}

		require.NoError(t, n.cfg.Validate(), name)
	}

	if plan.Roots.OS == nil {
		return
	}

	cfg, err := clientconfig.Open(r.talosconfig)
	require.NoError(t, err)

	creds, err := CredentialsFromContext("on disk", cfg.Contexts["test"])
	require.NoError(t, err)
	assert.Equal(t, []byte(plan.Roots.OS.New.Crt), creds.CA, "the final talosconfig trusts the new CA only")

	for _, name := range r.tc.nodes {
		for _, direct := range []bool{true, false} {
			assert.NoError(t, f.Probe(t.Context(), name, creds, direct), "%s direct=%v", name, direct)
		}
	}
}

func TestRunRotatesEachRoot(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name  string
		roots []Root
	}{
		{"os", []Root{RootOS}},
		{"kubernetes", []Root{RootKubernetes}},
		{"etcd", []Root{RootEtcd}},
		{"aggregator", []Root{RootAggregator}},
		{"service-account", []Root{RootServiceAccount}},
		{"default (os and kubernetes)", nil},
		{"all", AllRoots},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cluster := newTestCluster(t, 2, 2)
			oldContext := *cluster.context
			r := newRun(t, cluster, tc.roots...)

			out, err := r.exec(t)
			require.NoError(t, err, out)

			plan := r.loadPlan(t)
			require.NotNil(t, plan.Completed)

			wantRoots := tc.roots
			if wantRoots == nil {
				wantRoots = DefaultRoots
			}

			assert.Equal(t, sortRoots(wantRoots), plan.Roots.List())
			assertConverged(t, r, plan)

			for _, step := range Steps {
				assert.Contains(t, out, "> "+step+": ")
			}

			assert.Regexp(t, regexp.MustCompile(`(?m)^- 10\.0\.0\.3: OK`), out)

			if plan.Roots.OS != nil {
				old, err := CredentialsFromContext("old", &oldContext)
				require.NoError(t, err)

				for _, name := range cluster.nodes {
					assert.Error(t, cluster.fake.Probe(t.Context(), name, old, true), "%s accepts the old talosconfig", name)
				}
			}

			again, err := r.exec(t)
			require.NoError(t, err)
			assert.Contains(t, again, "is complete")
		})
	}
}

func TestRunResumesAfterCrashAtEveryPatch(t *testing.T) {
	t.Parallel()

	roots := []Root{RootOS, RootKubernetes, RootServiceAccount}

	// A clean run counts the patch calls; each crash point is then tested on a fresh cluster.
	clean := newTestCluster(t, 2, 2)
	cleanRun := newRun(t, clean, roots...)
	out, err := cleanRun.exec(t)
	require.NoError(t, err, out)

	calls := clean.fake.applies
	require.Equal(t, 3*4, calls, "one patch call per node and step")

	for _, landed := range []bool{false, true} {
		for crashAt := 1; crashAt <= calls; crashAt++ {
			t.Run(fmt.Sprintf("crash at patch %d, landed %v", crashAt, landed), func(t *testing.T) {
				t.Parallel()

				cluster := newTestCluster(t, 2, 2)
				cluster.fake.crashAt, cluster.fake.landBeforeCrash = crashAt, landed

				r := newRun(t, cluster, roots...)

				out, err := r.exec(t)
				require.ErrorIs(t, err, errCrash, out)

				first := r.loadPlan(t)
				require.Nil(t, first.Completed)

				cluster.fake.crashAt = 0

				out, err = r.exec(t)
				require.NoError(t, err, "crash at patch %d (landed %v):\n%s", crashAt, landed, out)
				assert.Contains(t, out, "plan loaded from")

				final := r.loadPlan(t)
				for _, root := range roots {
					assert.Equal(t, first.Roots.Get(root).New, final.Roots.Get(root).New, "%s: a second CA was generated", root)
				}

				assert.Equal(t, first.Client, final.Client)
				assertConverged(t, r, final)
			})
		}
	}
}

func TestRunKeepsTalosconfigWorkingAtEveryMoment(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 3)
	r := newRun(t, cluster, RootOS)

	var (
		mu       sync.Mutex
		failures []string
	)

	// After every change of any node, the talosconfig on disk must work against every node.
	check := func(when string) {
		cfg, err := clientconfig.Open(r.talosconfig)
		if err != nil {
			failures = append(failures, when+": "+err.Error())

			return
		}

		creds, err := CredentialsFromContext("on disk", cfg.Contexts["test"])
		if err != nil {
			failures = append(failures, when+": "+err.Error())

			return
		}

		for _, name := range cluster.nodes {
			for _, entry := range []string{name, cluster.fake.entry} {
				if _, err := cluster.fake.call(creds, entry, name); err != nil {
					failures = append(failures, when+": "+err.Error())
				}
			}
		}
	}

	cluster.fake.afterApply = func() {
		mu.Lock()
		defer mu.Unlock()

		check("after a patch")
	}

	out, err := r.exec(t)
	require.NoError(t, err, out)
	assert.Empty(t, failures)
	assertConverged(t, r, r.loadPlan(t))
}

func TestRunDryRunChangesNothing(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 2)
	r := newRun(t, cluster, AllRoots...)
	r.opts.DryRun = true

	before := map[string][]byte{}

	for _, name := range cluster.nodes {
		data, err := cluster.fake.configOf(name).Bytes()
		require.NoError(t, err)

		before[name] = data
	}

	talosconfig, err := os.ReadFile(r.talosconfig)
	require.NoError(t, err)

	out, err := r.exec(t)
	require.NoError(t, err, out)

	for _, name := range cluster.nodes {
		data, err := cluster.fake.configOf(name).Bytes()
		require.NoError(t, err)
		assert.Equal(t, string(before[name]), string(data), name)
	}

	after, err := os.ReadFile(r.talosconfig)
	require.NoError(t, err)
	assert.Equal(t, talosconfig, after)
	assert.NoFileExists(t, r.plan)
	assert.Zero(t, cluster.fake.applies)

	for _, step := range []string{StepAccept, StepSwitch, StepRetire} {
		assert.Contains(t, out, "> "+step+": patches that would be applied")
	}

	assert.Contains(t, out, "key: '******'")
	assert.Contains(t, out, "$patch: delete")
	assert.Contains(t, out, "nothing was changed")
	assertNoPrivateKey(t, out)
}

// assertNoPrivateKey decodes every base64 token of the output and refuses private keys.
func assertNoPrivateKey(t *testing.T, out string) {
	t.Helper()

	for _, token := range regexp.MustCompile(`[A-Za-z0-9+/=]{40,}`).FindAllString(out, -1) {
		decoded, err := base64.StdEncoding.DecodeString(token)
		if err != nil {
			continue
		}

		assert.NotContains(t, string(decoded), "PRIVATE KEY", "private key material in the output")
	}
}

func TestRunDryRunResumesFromPlan(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 1)
	cluster.fake.crashAt = 3 // after the accept step, at the first switch patch

	r := newRun(t, cluster, RootOS)
	_, err := r.exec(t)
	require.ErrorIs(t, err, errCrash)

	cluster.fake.crashAt = 0
	r.opts.DryRun = true

	out, err := r.exec(t)
	require.NoError(t, err, out)
	assert.Contains(t, out, "nodes: 2 accepted")
	assert.Contains(t, out, "plan loaded from")
	assert.Regexp(t, regexp.MustCompile(`(?s)> accept: patches.*- 10\.0\.0\.1: already accepted, no patch.*> switch: patches.*- 10\.0\.0\.1: 1 patch`), out)
}

func TestPreflightRefuses(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		// setup breaks the cluster or the run.
		setup func(t *testing.T, c *testCluster, r *run)
		// want is in the error (refusals) or in the output.
		want string
		// forceable problems go ahead with --force.
		forceable bool
	}{
		{
			name:  "unreachable node",
			setup: func(_ *testing.T, c *testCluster, _ *run) { c.fake.unreachable["10.0.0.3"] = true },
			want:  "make the rotation impossible",
		},
		{
			name:      "clock skew",
			setup:     func(_ *testing.T, c *testCluster, _ *run) { c.fake.clockOffset["10.0.0.2"] = 2 * time.Minute },
			want:      "preflight found 1 problem",
			forceable: true,
		},
		{
			name:      "expired certificate",
			setup:     func(_ *testing.T, c *testCluster, _ *run) { c.fake.expired["10.0.0.1"] = "trustd" },
			want:      "preflight found 1 problem",
			forceable: true,
		},
		{
			name:  "no control plane listed",
			setup: func(_ *testing.T, c *testCluster, r *run) { r.opts.Nodes = c.nodes[1:] },
			want:  "make the rotation impossible",
		},
		{
			name: "reader talosconfig",
			setup: func(t *testing.T, c *testCluster, r *run) {
				crt, key, err := c.bundle.NewClientCertificate([]string{"os:reader"}, time.Hour)
				require.NoError(t, err)

				cfg := clientconfig.New("test", c.context.Endpoints, c.bundle.Certs.OS.Crt, crt, key)
				require.NoError(t, cfg.Save(r.talosconfig))
			},
			want: "make the rotation impossible",
		},
		{
			name: "plan of other roots",
			setup: func(t *testing.T, _ *testCluster, r *run) {
				p, err := newPlan([]Root{RootEtcd}, time.Now())
				require.NoError(t, err)
				require.NoError(t, p.Save(r.plan))
			},
			want: "rotates etcd, but this command asks for os",
		},
		{
			name: "plan of another cluster",
			setup: func(t *testing.T, _ *testCluster, r *run) {
				other := newTestCluster(t, 1, 0)
				otherRun := newRun(t, other, RootOS)
				otherRun.plan, otherRun.opts.PlanPath = r.plan, r.plan
				other.fake.crashAt = 1

				_, err := otherRun.exec(t)
				require.ErrorIs(t, err, errCrash)
			},
			want: "neither the old",
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cluster := newTestCluster(t, 1, 2)
			r := newRun(t, cluster, RootOS)
			tc.setup(t, cluster, r)

			planBefore, _ := os.ReadFile(r.plan) // absent is fine

			out, err := r.exec(t)
			require.Error(t, err, out)
			assert.Contains(t, err.Error()+out, tc.want)
			assert.Zero(t, cluster.fake.applies, "nothing may change")

			planAfter, _ := os.ReadFile(r.plan)
			assert.Equal(t, planBefore, planAfter, "the plan must not be written")

			if !tc.forceable {
				return
			}

			r.opts.Force = true

			out, err = r.exec(t)
			require.NoError(t, err, out)
			assert.Contains(t, out, "--force")
		})
	}
}

func TestRunSuppliedCA(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 1)
	r := newRun(t, cluster, RootOS)

	crt, key, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	plan := "version: 1\nroots:\n    os:\n        new:\n            crt: " +
		base64.StdEncoding.EncodeToString(crt) + "\n            key: " + base64.StdEncoding.EncodeToString(key) + "\n"
	require.NoError(t, os.WriteFile(r.plan, []byte(plan), 0o600))

	out, err := r.exec(t)
	require.NoError(t, err, out)

	loaded := r.loadPlan(t)
	assert.False(t, loaded.Created.IsZero())
	assert.Equal(t, crt, []byte(loaded.Roots.OS.New.Crt))
	assert.Equal(t, []byte(cluster.bundle.Certs.OS.Crt), []byte(loaded.Roots.OS.Old.Crt))
	assertConverged(t, r, loaded)
}

func TestRunUpdatesSecrets(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 1)
	r := newRun(t, cluster, RootOS, RootServiceAccount)

	secrets := filepath.Join(r.dir, "secrets.yaml")
	require.NoError(t, cluster.bundle.WriteFile(secrets, false))

	original, err := os.ReadFile(secrets)
	require.NoError(t, err)

	r.opts.SecretsPath = secrets

	out, err := r.exec(t)
	require.NoError(t, err, out)

	plan := r.loadPlan(t)

	updated, err := os.ReadFile(secrets)
	require.NoError(t, err)
	assert.Contains(t, string(updated), base64.StdEncoding.EncodeToString(plan.Roots.OS.New.Crt))
	assert.Contains(t, string(updated), base64.StdEncoding.EncodeToString(plan.Roots.ServiceAccount.New.Key))

	backups, err := filepath.Glob(secrets + ".*.bak")
	require.NoError(t, err)
	require.Len(t, backups, 1)

	backup, err := os.ReadFile(backups[0])
	require.NoError(t, err)
	assert.Equal(t, original, backup)

	info, err := os.Stat(backups[0])
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	assert.True(t, slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool { return strings.Contains(l, "secrets") && strings.Contains(l, "updated") }))
}

func TestRunRefusesForeignSecrets(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 1)
	other := newTestCluster(t, 1, 0)
	r := newRun(t, cluster, RootOS)

	secrets := filepath.Join(r.dir, "secrets.yaml")
	require.NoError(t, other.bundle.WriteFile(secrets, false))

	r.opts.SecretsPath = secrets

	out, err := r.exec(t)
	require.Error(t, err, out)
	assert.Contains(t, out, "pass the cluster's secrets.yaml")
	assert.Zero(t, cluster.fake.applies)
}

// TestRunCompletedPlanServesOnlyItsRotation: a completed plan of the os root never passes for a
// rotation of the kubernetes root (refused, nothing changes); rerunning the os rotation says when
// it finished and how to rotate again.
func TestRunCompletedPlanServesOnlyItsRotation(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 1)
	r := newRun(t, cluster, RootOS)

	out, err := r.exec(t)
	require.NoError(t, err, out)

	completed := r.loadPlan(t).Completed
	require.NotNil(t, completed)

	applies := cluster.fake.applies
	kubernetesCA := func() string {
		rc, err := readRoot(cluster.fake.configOf(cluster.nodes[0]).Document(), RootKubernetes)
		require.NoError(t, err)

		return string(rc.issuingCrt)
	}
	before := kubernetesCA()

	for _, dryRun := range []bool{false, true} {
		r.opts.Roots = []Root{RootKubernetes}
		r.opts.DryRun = dryRun

		out, err = r.exec(t)
		require.Error(t, err, out)
		assert.Contains(t, err.Error(), "is a completed rotation of os")
		assert.Contains(t, err.Error(), "not of kubernetes")
		assert.Contains(t, err.Error(), "pass a new --plan FILE")
		assert.NotContains(t, out, "nothing to do")
		assert.Equal(t, applies, cluster.fake.applies, "no node is patched")
		assert.Equal(t, before, kubernetesCA(), "the Kubernetes CA is unchanged")
	}

	r.opts.Roots = []Root{RootOS}
	r.opts.DryRun = false

	out, err = r.exec(t)
	require.NoError(t, err, out)
	assert.Contains(t, out, "the rotation of os in "+r.plan+" is complete (finished "+completed.UTC().Format(time.RFC3339)+")")
	assert.Contains(t, out, "To rotate again, pass a new --plan FILE")
	assert.Equal(t, applies, cluster.fake.applies)
}

// TestRunWordsANodeWithNothingToDoAlike: a node already at a step's phase is reported in the same
// words by a dry run and by a real run.
func TestRunWordsANodeWithNothingToDoAlike(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 1)
	cluster.fake.crashAt = 3 // after the accept step, at the first switch patch

	r := newRun(t, cluster, RootOS)
	_, err := r.exec(t)
	require.ErrorIs(t, err, errCrash)

	cluster.fake.crashAt = 0
	r.opts.DryRun = true

	dry, err := r.exec(t)
	require.NoError(t, err, dry)

	r.opts.DryRun = false

	applied, err := r.exec(t)
	require.NoError(t, err, applied)

	for _, out := range []string{dry, applied} {
		accept := out[strings.Index(out, "> accept:"):strings.Index(out, "> switch:")]
		assert.Regexp(t, regexp.MustCompile(`(?m)^- 10\.0\.0\.1: (OK \()?already accepted, no patch\)?$`), accept)
		assert.NotContains(t, accept, "nothing to do")
	}
}
