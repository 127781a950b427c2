package rotate

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// tokenShape finds anything shaped like a join token in output.
var tokenShape = regexp.MustCompile(`[a-z0-9]{6}\.[a-z0-9]{16}`)

func TestTokenPatchSteps(t *testing.T) {
	t.Parallel()

	f := newPatchFixture(t)
	rp := f.plan.Roots.JoinToken
	oldToken, newToken := rp.Old.Token, rp.New.Token

	type m = map[string]any

	type l = []any

	tests := []struct {
		name string
		cfg  *machineconfig.Config
		// want is the patch of each step from the config the previous one left (nil: no patch),
		// then the token and accepted tokens after the last step.
		want         [3]any
		wantAccepted [3][]string
	}{
		{
			name: "control plane",
			cfg:  f.controlPlane,
			want: [3]any{
				l{
					m{"op": "test", "path": "/machine/token", "value": oldToken},
					m{"op": "add", "path": "/machine/acceptedTokens", "value": l{newToken}},
				},
				l{
					m{"op": "test", "path": "/machine/token", "value": oldToken},
					m{"op": "test", "path": "/machine/acceptedTokens", "value": l{newToken}},
					m{"op": "replace", "path": "/machine/token", "value": newToken},
					m{"op": "add", "path": "/machine/acceptedTokens", "value": l{oldToken}},
				},
				l{
					m{"op": "test", "path": "/machine/token", "value": newToken},
					m{"op": "test", "path": "/machine/acceptedTokens", "value": l{oldToken}},
					m{"op": "remove", "path": "/machine/acceptedTokens"},
				},
			},
			wantAccepted: [3][]string{{newToken}, {oldToken}, nil},
		},
		{
			// A worker runs no trustd: it accepts nothing and takes the new token at the switch.
			name: "worker",
			cfg:  f.worker,
			want: [3]any{
				nil,
				l{
					m{"op": "test", "path": "/machine/token", "value": oldToken},
					m{"op": "replace", "path": "/machine/token", "value": newToken},
				},
				nil,
			},
			wantAccepted: [3][]string{nil, nil, nil},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cfg := tc.cfg

			for i, target := range []Phase{PhaseAccepted, PhaseSwitched, PhaseRetired} {
				rc, err := readRoot(cfg.Document(), RootJoinToken)
				require.NoError(t, err)

				p, err := patchFor(RootJoinToken, rc, rp, target)
				require.NoError(t, err)

				if tc.want[i] == nil {
					assert.Nil(t, p, "step %s", target.stepName())

					continue
				}

				require.NotNil(t, p, "step %s", target.stepName())
				assert.Equal(t, tc.want[i], decodeYAML(t, p.Data), "step %s", target.stepName())
				assert.NotContains(t, string(p.Redacted), oldToken)
				assert.NotContains(t, string(p.Redacted), newToken)
				assert.Contains(t, string(p.Redacted), machineconfig.Redacted)

				cfg, err = applyLocally(cfg, []*Patch{p})
				require.NoError(t, err, "step %s", target.stepName())
				assert.Equal(t, tc.wantAccepted[i], cfg.Document().Machine.AcceptedTokens, "step %s", target.stepName())
			}

			assert.Equal(t, newToken, cfg.Document().Machine.Token)

			// Past the last step, nothing is left to do.
			rc, err := readRoot(cfg.Document(), RootJoinToken)
			require.NoError(t, err)

			phase, err := derivePhase(RootJoinToken, rc, rp.Old.Fingerprint, rp.New.Fingerprint)
			require.NoError(t, err)
			assert.Equal(t, PhaseRetired, phase)
		})
	}
}

// TestTokenPatchKeepsOtherTokens: tokens the rotation does not own stay, and a patch computed
// from a config that changed before it lands is refused instead of dropping the change.
func TestTokenPatchKeepsOtherTokens(t *testing.T) {
	t.Parallel()

	f := newPatchFixture(t)
	rp := f.plan.Roots.JoinToken

	const other = "zzzzzz.zzzzzzzzzzzzzzzz"

	cfg := applyPatchText(t, f.controlPlane, `{"machine": {"acceptedTokens": ["`+other+`"]}}`)

	for _, target := range []Phase{PhaseAccepted, PhaseSwitched, PhaseRetired} {
		rc, err := readRoot(cfg.Document(), RootJoinToken)
		require.NoError(t, err)

		p, err := patchFor(RootJoinToken, rc, rp, target)
		require.NoError(t, err)
		require.NotNil(t, p)

		// Someone adds a token between the read and the patch: the patch's test fails.
		changed := applyPatchText(t, cfg, `{"machine": {"acceptedTokens": ["yyyyyy.yyyyyyyyyyyyyyyy"]}}`)
		_, err = applyLocally(changed, []*Patch{p})
		require.Error(t, err, "step %s", target.stepName())
		assert.Empty(t, tokenShape.FindAllString(err.Error(), -1), "the refusal quotes a token: %v", err)

		cfg, err = applyLocally(cfg, []*Patch{p})
		require.NoError(t, err)
		assert.Contains(t, cfg.Document().Machine.AcceptedTokens, other, "step %s", target.stepName())
	}

	assert.Equal(t, []string{other}, cfg.Document().Machine.AcceptedTokens)
	assert.Equal(t, rp.New.Token, cfg.Document().Machine.Token)
}

func applyPatchText(t *testing.T, cfg *machineconfig.Config, patch string) *machineconfig.Config {
	t.Helper()

	p, err := machineconfig.LoadPatch([]byte(patch))
	require.NoError(t, err)

	next, err := machineconfig.Apply(cfg, p)
	require.NoError(t, err)
	require.NoError(t, next.Validate())

	return next
}

func TestParsePlanJoinToken(t *testing.T) {
	t.Parallel()

	const bad = "Not_A.Token"

	tests := []struct {
		name, plan, want string
	}{
		{
			name: "wrong shape",
			plan: "version: 1\nroots:\n    join-token:\n        new:\n            token: " + bad + "\n",
			want: `roots.join-token.new: token: not a valid token: want 6 and 16 characters of [a-z0-9] joined by a dot`,
		},
		{
			name: "missing",
			plan: "version: 1\nroots:\n    join-token:\n        new: {}\n",
			want: "roots.join-token.new: token is required",
		},
		{
			name: "a certificate instead",
			plan: "version: 1\nroots:\n    join-token:\n        new:\n            crt: LS0tLQ==\n            token: abcdef.0123456789abcdef\n",
			want: "roots.join-token.new: crt and key must be empty",
		},
		{
			name: "same as old",
			plan: "version: 1\nroots:\n    join-token:\n        old:\n            token: abcdef.0123456789abcdef\n        new:\n            token: abcdef.0123456789abcdef\n",
			want: "roots.join-token: old and new are the same token",
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			_, err := ParsePlan([]byte(tc.plan))
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), bad, "the refused token is not quoted")
		})
	}

	p, err := ParsePlan([]byte("version: 1\nroots:\n    join-token:\n        new:\n            token: abcdef.0123456789abcdef\n"))
	require.NoError(t, err)
	assert.Equal(t, []Root{RootJoinToken}, p.Roots.List())
	assert.Equal(t, tokenFingerprint("abcdef.0123456789abcdef"), p.Roots.JoinToken.New.Fingerprint)
}

// TestRunRotatesJoinToken: --join-token alone changes the token and nothing else, workers last,
// the old token is refused by every control plane's trustd at the end, secrets.yaml gets the new
// token, and no token is ever printed.
func TestRunRotatesJoinToken(t *testing.T) {
	t.Parallel()

	tc := newTestCluster(t, 2, 2)
	oldToken := tc.bundle.TrustdInfo.Token

	r := newRun(t, tc, RootJoinToken)

	secrets := filepath.Join(r.dir, "secrets.yaml")
	require.NoError(t, tc.bundle.WriteFile(secrets, true))

	r.opts.SecretsPath = secrets

	talosconfig, err := os.ReadFile(r.talosconfig)
	require.NoError(t, err)

	before := map[string]*machineconfig.Config{}
	for _, name := range tc.nodes {
		before[name] = tc.fake.configOf(name)
	}

	// The control planes accept the new token before any worker holds it.
	tc.fake.afterApply = func() {
		for _, w := range tc.nodes[2:] {
			if tc.fake.nodes[w].cfg.Document().Machine.Token == oldToken {
				continue
			}

			for _, cp := range tc.nodes[:2] {
				machine := tc.fake.nodes[cp].cfg.Document().Machine
				assert.True(t, machine.Token != oldToken || len(machine.AcceptedTokens) > 0,
					"%s holds the new token while control plane %s does not accept it", w, cp)
			}
		}
	}

	out, err := r.exec(t)
	require.NoError(t, err, out)
	t.Log(out)

	plan := r.loadPlan(t)
	require.NotNil(t, plan.Completed)
	assert.Equal(t, []Root{RootJoinToken}, plan.Roots.List())
	assert.Equal(t, oldToken, plan.Roots.JoinToken.Old.Token)
	assert.True(t, machineconfig.ValidToken(plan.Roots.JoinToken.New.Token))

	newToken := plan.Roots.JoinToken.New.Token

	assertConverged(t, r, plan)

	for _, name := range tc.nodes {
		after := tc.fake.configOf(name)
		assert.Equal(t, before[name].Document().Machine.CA, after.Document().Machine.CA, "%s: the OS CA is untouched", name)
		assert.Equal(t, before[name].Document().Cluster.CA, after.Document().Cluster.CA, "%s: the Kubernetes CA is untouched", name)
	}

	for _, cp := range tc.nodes[:2] {
		err := tc.fake.TrustdProbe(t.Context(), cp, tc.bundle.Certs.OS.Crt, oldToken)
		assert.Equal(t, codes.Unauthenticated, status.Code(err), "%s: %v", cp, err)
		assert.NoError(t, tc.fake.TrustdProbe(t.Context(), cp, tc.bundle.Certs.OS.Crt, newToken), cp)
	}

	after, err := os.ReadFile(r.talosconfig)
	require.NoError(t, err)
	assert.Equal(t, talosconfig, after, "a join-token rotation leaves the talosconfig alone")

	b, err := bundle.Load(secrets)
	require.NoError(t, err)
	assert.Equal(t, newToken, b.TrustdInfo.Token)
	assert.Equal(t, tc.bundle.Certs.OS.Crt, b.Certs.OS.Crt)

	backups, err := filepath.Glob(secrets + ".*.bak")
	require.NoError(t, err)
	require.Len(t, backups, 1)

	backup, err := bundle.Load(backups[0])
	require.NoError(t, err)
	assert.Equal(t, oldToken, backup.TrustdInfo.Token)

	assert.Contains(t, out, "trustd accepts the new join token and refuses the old one")
	assert.Contains(t, out, "rotation complete: join-token")
	assert.Empty(t, tokenShape.FindAllString(out, -1), "a token in the output")
}

func TestRunDryRunJoinTokenShowsNoToken(t *testing.T) {
	t.Parallel()

	tc := newTestCluster(t, 1, 1)
	r := newRun(t, tc, RootJoinToken)
	r.opts.DryRun = true

	out, err := r.exec(t)
	require.NoError(t, err, out)

	assert.Contains(t, out, "op: replace")
	assert.Contains(t, out, "path: /machine/acceptedTokens")
	assert.Contains(t, out, "'******'")
	assert.Empty(t, tokenShape.FindAllString(out, -1), "a token in the output:\n%s", out)
	assert.NotContains(t, out, tokenFingerprint(tc.bundle.TrustdInfo.Token)[:12], "a token digest in the output")
	assert.NoFileExists(t, r.plan)
	assert.Zero(t, tc.fake.applies)
}

// TestRunJoinTokenResumesAfterCrash crashes the command at each patch in turn (before and after
// it lands) and reruns it: the rotation completes with the one token of the plan.
func TestRunJoinTokenResumesAfterCrash(t *testing.T) {
	t.Parallel()

	// 2 control planes x accept, switch, retire + 2 workers x switch.
	const patches = 8

	for crashAt := 1; crashAt <= patches; crashAt++ {
		for _, landed := range []bool{false, true} {
			t.Run(fmt.Sprintf("patch %d landed %v", crashAt, landed), func(t *testing.T) {
				t.Parallel()

				tc := newTestCluster(t, 2, 2)
				tc.fake.crashAt, tc.fake.landBeforeCrash = crashAt, landed

				r := newRun(t, tc, RootJoinToken)

				out, err := r.exec(t)
				require.ErrorIs(t, err, errCrash, out)

				planned := r.loadPlan(t).Roots.JoinToken.New.Token

				out, err = r.exec(t)
				require.NoError(t, err, out)

				plan := r.loadPlan(t)
				assert.Equal(t, planned, plan.Roots.JoinToken.New.Token, "a second token was generated")
				assertConverged(t, r, plan)
			})
		}
	}
}

// hiddenTrustd is a Cluster that cannot reach trustd.
type hiddenTrustd struct{ Cluster }

func TestRunJoinTokenNeedsTrustd(t *testing.T) {
	t.Parallel()

	tc := newTestCluster(t, 1, 1)
	r := newRun(t, tc, RootJoinToken)

	cfg := r.opts
	cfg.Context = tc.context

	err := Run(context.Background(), hiddenTrustd{tc.fake}, cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "cannot reach trustd")
	assert.Zero(t, tc.fake.applies)
	assert.NoFileExists(t, r.plan)
}

// TestRunJoinTokenTrustdUnreachable: a control plane whose trustd cannot be checked stops the
// rotation in preflight, before anything changes.
func TestRunJoinTokenTrustdUnreachable(t *testing.T) {
	t.Parallel()

	tc := newTestCluster(t, 1, 1)
	r := newRun(t, tc, RootJoinToken)

	// trustd serves a certificate this machine does not trust.
	tc.fake.nodes[tc.nodes[0]].leaves["trustd"] = fakeLeaf{root: RootOS, issuer: strings.Repeat("0", 64)}

	out, err := r.exec(t)
	require.Error(t, err, out)
	assert.Contains(t, out, "trustd cannot be asked from here to accept the node's own machine.token")
	assert.Zero(t, tc.fake.applies)
}

// TestRunJoinTokenRefusesOtherSecrets: a secrets.yaml of another cluster is refused in preflight,
// naming the field and quoting no token.
func TestRunJoinTokenRefusesOtherSecrets(t *testing.T) {
	t.Parallel()

	tc := newTestCluster(t, 1, 1)
	r := newRun(t, tc, RootJoinToken)

	other, err := bundle.Generate()
	require.NoError(t, err)

	other.Certs = tc.bundle.Certs
	r.opts.SecretsPath = filepath.Join(r.dir, "secrets.yaml")
	require.NoError(t, other.WriteFile(r.opts.SecretsPath, true))

	out, err := r.exec(t)
	require.Error(t, err, out)
	assert.Contains(t, out, "trustdinfo.token is neither the cluster's join token nor the plan's new one")
	assert.Empty(t, tokenShape.FindAllString(out+err.Error(), -1), "a token in the output")
	assert.Zero(t, tc.fake.applies)
}
