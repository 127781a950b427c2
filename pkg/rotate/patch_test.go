package rotate

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
)

func TestDerivePhase(t *testing.T) {
	t.Parallel()

	const oldFP, newFP, otherFP = "old", "new", "other"

	entry := func(fps ...string) acceptedEntry { return acceptedEntry{fingerprints: fps} }

	tests := []struct {
		name     string
		issuing  string
		accepted []acceptedEntry
		want     Phase
		wantErr  string
	}{
		{name: "old issues alone", issuing: oldFP, want: PhaseInitial},
		{name: "old issues, unrelated CA accepted", issuing: oldFP, accepted: []acceptedEntry{entry(otherFP)}, want: PhaseInitial},
		{name: "old issues, new accepted", issuing: oldFP, accepted: []acceptedEntry{entry(newFP)}, want: PhaseAccepted},
		{name: "new accepted inside a bundle", issuing: oldFP, accepted: []acceptedEntry{entry(otherFP, newFP)}, want: PhaseAccepted},
		{name: "new issues, old accepted", issuing: newFP, accepted: []acceptedEntry{entry(oldFP)}, want: PhaseSwitched},
		{name: "new issues, old and new accepted", issuing: newFP, accepted: []acceptedEntry{entry(newFP), entry(oldFP)}, want: PhaseSwitched},
		{name: "new issues alone", issuing: newFP, want: PhaseRetired},
		{name: "new issues, new also accepted", issuing: newFP, accepted: []acceptedEntry{entry(newFP)}, want: PhaseRetired},
		{name: "a third CA issues", issuing: otherFP, accepted: []acceptedEntry{entry(oldFP)}, wantErr: "neither the old"},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			rc := rootConfig{present: true, issuingFingerprint: tc.issuing, accepted: tc.accepted}

			got, err := derivePhase(RootOS, rc, oldFP, newFP)
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				assert.Contains(t, err.Error(), "machine.ca")

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

// patchFixture is a generated cluster config pair and a plan rotating every root.
type patchFixture struct {
	bundle       *bundle.Bundle
	controlPlane *machineconfig.Config
	worker       *machineconfig.Config
	plan         *Plan
}

func newPatchFixture(t *testing.T) *patchFixture {
	t.Helper()

	b, err := bundle.Generate()
	require.NoError(t, err)

	cp, worker, err := generate.Generate(generate.Input{ClusterName: "test", Endpoint: "https://10.0.0.1:6443", Bundle: b})
	require.NoError(t, err)

	plan, err := newPlan(AllRoots, time.Now())
	require.NoError(t, err)

	current := map[Root]Material{}

	for _, root := range AllRoots {
		rc, err := readRoot(cp.Document(), root)
		require.NoError(t, err)

		current[root] = Material{Crt: rc.issuingCrt, Key: rc.issuingKey, Token: rc.issuingToken, Fingerprint: rc.issuingFingerprint}
	}

	_, err = plan.fill(current, []string{adminRole}, time.Now())
	require.NoError(t, err)

	return &patchFixture{bundle: b, controlPlane: cp, worker: worker, plan: plan}
}

// decodeYAML decodes a YAML document into generic values for comparison.
func decodeYAML(t *testing.T, data []byte) any {
	t.Helper()

	var out any
	require.NoError(t, yaml.Unmarshal(data, &out))

	return out
}

func b64(data []byte) string {
	return base64.StdEncoding.EncodeToString(data)
}

func TestPatchForSteps(t *testing.T) {
	t.Parallel()

	f := newPatchFixture(t)
	osRoot, k8s, sa := f.plan.Roots.OS, f.plan.Roots.Kubernetes, f.plan.Roots.ServiceAccount

	saOldPub, err := publicKeyPEM(sa.Old.Key)
	require.NoError(t, err)

	saNewPub, err := publicKeyPEM(sa.New.Key)
	require.NoError(t, err)

	type m = map[string]any

	type l = []any

	tests := []struct {
		name   string
		root   Root
		worker bool
		// want is the patch after each step, from the initial config (nil: no patch).
		want [3]any
	}{
		{
			name: "os on a control plane",
			root: RootOS,
			want: [3]any{
				m{"machine": m{"acceptedCAs": l{m{"crt": b64(osRoot.New.Crt)}}}},
				m{"machine": m{
					"ca":          m{"crt": b64(osRoot.New.Crt), "key": b64(osRoot.New.Key)},
					"acceptedCAs": l{m{"crt": b64(osRoot.Old.Crt)}, m{"$patch": "delete", "crt": b64(osRoot.New.Crt)}},
				}},
				m{"machine": m{"acceptedCAs": l{m{"$patch": "delete", "crt": b64(osRoot.Old.Crt)}}}},
			},
		},
		{
			name:   "os on a worker gets the certificate only",
			root:   RootOS,
			worker: true,
			want: [3]any{
				m{"machine": m{"acceptedCAs": l{m{"crt": b64(osRoot.New.Crt)}}}},
				m{"machine": m{
					"ca":          m{"crt": b64(osRoot.New.Crt), "key": ""},
					"acceptedCAs": l{m{"crt": b64(osRoot.Old.Crt)}, m{"$patch": "delete", "crt": b64(osRoot.New.Crt)}},
				}},
				m{"machine": m{"acceptedCAs": l{m{"$patch": "delete", "crt": b64(osRoot.Old.Crt)}}}},
			},
		},
		{
			name:   "kubernetes on a worker",
			root:   RootKubernetes,
			worker: true,
			want: [3]any{
				m{"cluster": m{"acceptedCAs": l{m{"crt": b64(k8s.New.Crt)}}}},
				m{"cluster": m{
					"ca":          m{"crt": b64(k8s.New.Crt), "key": ""},
					"acceptedCAs": l{m{"crt": b64(k8s.Old.Crt)}, m{"$patch": "delete", "crt": b64(k8s.New.Crt)}},
				}},
				m{"cluster": m{"acceptedCAs": l{m{"$patch": "delete", "crt": b64(k8s.Old.Crt)}}}},
			},
		},
		{
			name: "etcd lives under cluster.etcd",
			root: RootEtcd,
			want: [3]any{
				m{"cluster": m{"etcd": m{"acceptedCAs": l{m{"crt": b64(f.plan.Roots.Etcd.New.Crt)}}}}},
				m{"cluster": m{"etcd": m{
					"ca":          m{"crt": b64(f.plan.Roots.Etcd.New.Crt), "key": b64(f.plan.Roots.Etcd.New.Key)},
					"acceptedCAs": l{m{"crt": b64(f.plan.Roots.Etcd.Old.Crt)}, m{"$patch": "delete", "crt": b64(f.plan.Roots.Etcd.New.Crt)}},
				}}},
				m{"cluster": m{"etcd": m{"acceptedCAs": l{m{"$patch": "delete", "crt": b64(f.plan.Roots.Etcd.Old.Crt)}}}}},
			},
		},
		{
			name: "aggregator uses acceptedAggregatorCAs",
			root: RootAggregator,
			want: [3]any{
				m{"cluster": m{"acceptedAggregatorCAs": l{m{"crt": b64(f.plan.Roots.Aggregator.New.Crt)}}}},
				m{"cluster": m{
					"aggregatorCA": m{"crt": b64(f.plan.Roots.Aggregator.New.Crt), "key": b64(f.plan.Roots.Aggregator.New.Key)},
					"acceptedAggregatorCAs": l{
						m{"crt": b64(f.plan.Roots.Aggregator.Old.Crt)},
						m{"$patch": "delete", "crt": b64(f.plan.Roots.Aggregator.New.Crt)},
					},
				}},
				m{"cluster": m{"acceptedAggregatorCAs": l{m{"$patch": "delete", "crt": b64(f.plan.Roots.Aggregator.Old.Crt)}}}},
			},
		},
		{
			name: "service-account accepts public keys, then signs with the new key",
			root: RootServiceAccount,
			want: [3]any{
				m{"cluster": m{"acceptedServiceAccountKeys": l{m{"key": b64(saNewPub)}}}},
				m{"cluster": m{
					"serviceAccount":             m{"key": b64(sa.New.Key)},
					"acceptedServiceAccountKeys": l{m{"key": b64(saOldPub)}, m{"$patch": "delete", "key": b64(saNewPub)}},
				}},
				m{"cluster": m{"acceptedServiceAccountKeys": l{m{"$patch": "delete", "key": b64(saOldPub)}}}},
			},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cfg := f.controlPlane
			if tc.worker {
				cfg = f.worker
			}

			rp := f.plan.Roots.Get(tc.root)

			for step, target := range []Phase{PhaseAccepted, PhaseSwitched, PhaseRetired} {
				rc, err := readRoot(cfg.Document(), tc.root)
				require.NoError(t, err)

				p, err := patchFor(tc.root, rc, rp, target)
				require.NoError(t, err)
				require.NotNil(t, p, "step %s", target.stepName())
				assert.Equal(t, tc.want[step], decodeYAML(t, p.Data), "step %s", target.stepName())
				assert.NotContains(t, string(p.Redacted), "PRIVATE")

				cfg, err = applyLocally(cfg, []*Patch{p})
				require.NoError(t, err, "step %s", target.stepName())

				rc, err = readRoot(cfg.Document(), tc.root)
				require.NoError(t, err)

				phase, err := derivePhase(tc.root, rc, rp.Old.Fingerprint, rp.New.Fingerprint)
				require.NoError(t, err)
				assert.Equal(t, target, phase, "the patch reaches its phase")

				// Once there, the step (and every earlier one) has nothing more to do.
				for again := PhaseAccepted; again <= target; again++ {
					p, err = patchFor(tc.root, rc, rp, again)
					require.NoError(t, err)
					assert.Nil(t, p, "step %s after %s", again.stepName(), target.stepName())
				}
			}
		})
	}
}

func TestPatchForRedactsKeys(t *testing.T) {
	t.Parallel()

	f := newPatchFixture(t)

	for _, root := range []Root{RootOS, RootServiceAccount} {
		rc, err := readRoot(f.controlPlane.Document(), root)
		require.NoError(t, err)

		p, err := patchFor(root, rc, f.plan.Roots.Get(root), PhaseSwitched)
		require.NoError(t, err)
		assert.Contains(t, string(p.Data), b64(f.plan.Roots.Get(root).New.Key))
		assert.NotContains(t, string(p.Redacted), b64(f.plan.Roots.Get(root).New.Key))
		assert.Contains(t, string(p.Redacted), machineconfig.Redacted)
	}
}

func TestPatchForRepairsPartialStates(t *testing.T) {
	t.Parallel()

	f := newPatchFixture(t)
	rp := f.plan.Roots.OS

	tests := []struct {
		name   string
		patch  string
		target Phase
		want   any
	}{
		{
			name:   "switched with the new CA still listed: retire removes both",
			patch:  "machine:\n  ca: {crt: " + b64(rp.New.Crt) + ", key: " + b64(rp.New.Key) + "}\n  acceptedCAs: [{crt: " + b64(rp.Old.Crt) + "}, {crt: " + b64(rp.New.Crt) + "}]\n",
			target: PhaseRetired,
			want: map[string]any{"machine": map[string]any{"acceptedCAs": []any{
				map[string]any{"$patch": "delete", "crt": b64(rp.Old.Crt)},
				map[string]any{"$patch": "delete", "crt": b64(rp.New.Crt)},
			}}},
		},
		{
			name:   "old CA listed twice: one delete removes both",
			patch:  "machine:\n  ca: {crt: " + b64(rp.New.Crt) + ", key: " + b64(rp.New.Key) + "}\n  acceptedCAs: [{crt: " + b64(rp.Old.Crt) + "}, {crt: " + b64(rp.Old.Crt) + "}]\n",
			target: PhaseRetired,
			want: map[string]any{"machine": map[string]any{"acceptedCAs": []any{
				map[string]any{"$patch": "delete", "crt": b64(rp.Old.Crt)},
			}}},
		},
		{
			name:   "switch from the initial phase (accept skipped) adds the old CA only",
			target: PhaseSwitched,
			want: map[string]any{"machine": map[string]any{
				"ca":          map[string]any{"crt": b64(rp.New.Crt), "key": b64(rp.New.Key)},
				"acceptedCAs": []any{map[string]any{"crt": b64(rp.Old.Crt)}},
			}},
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cfg := f.controlPlane

			if tc.patch != "" {
				var err error

				cfg, err = applyLocally(cfg, []*Patch{{Root: RootOS, Data: []byte(tc.patch)}})
				require.NoError(t, err)
			}

			rc, err := readRoot(cfg.Document(), RootOS)
			require.NoError(t, err)

			p, err := patchFor(RootOS, rc, rp, tc.target)
			require.NoError(t, err)
			assert.Equal(t, tc.want, decodeYAML(t, p.Data))

			_, err = applyLocally(cfg, []*Patch{p})
			require.NoError(t, err)
		})
	}
}

func TestPatchForRefusesBundledOldCA(t *testing.T) {
	t.Parallel()

	f := newPatchFixture(t)
	rp := f.plan.Roots.OS
	bundled := append(append([]byte{}, rp.Old.Crt...), f.plan.Roots.Kubernetes.New.Crt...)

	cfg, err := applyLocally(f.controlPlane, []*Patch{{Root: RootOS, Data: []byte(
		"machine:\n  ca: {crt: " + b64(rp.New.Crt) + ", key: " + b64(rp.New.Key) + "}\n  acceptedCAs: [{crt: " + b64(bundled) + "}]\n")}})
	require.NoError(t, err)

	rc, err := readRoot(cfg.Document(), RootOS)
	require.NoError(t, err)

	_, err = patchFor(RootOS, rc, rp, PhaseRetired)
	require.ErrorContains(t, err, "machine.acceptedCAs[0] bundles 2 certificates")
}
