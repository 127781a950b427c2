package rotate

import (
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestKeyNeverGoesToANodeThatTurnsControlPlane is the attack of a compromised worker that, after
// the accept step, reports a control-plane config holding the old CA key, so that the switch step
// would send it the new key.
func TestKeyNeverGoesToANodeThatTurnsControlPlane(t *testing.T) {
	t.Parallel()

	for _, root := range []Root{RootKubernetes, RootOS} {
		t.Run(string(root), func(t *testing.T) {
			t.Parallel()

			tc := newTestCluster(t, 1, 2)
			r := newRun(t, tc, root)
			f := tc.fake
			liar := tc.nodes[2]

			f.afterApply = func() {
				if f.applies == len(tc.nodes) { // every node has taken the accept step
					f.nodes[liar].cfg = f.nodes[tc.nodes[0]].cfg
				}
			}

			out, err := r.exec(t)
			require.Error(t, err, out)
			assert.Contains(t, out+err.Error(), liar+" reports holding "+root.issuingPath()+", but it is not a control plane of the plan")

			plan := r.loadPlan(t)
			assert.Equal(t, []string{tc.nodes[0]}, plan.ControlPlanes)

			newKey := plan.Roots.Get(root).New.Key
			require.NotEmpty(t, newKey)

			require.NotEmpty(t, f.sent[tc.nodes[0]], "the control plane is patched")

			for _, p := range f.sent[liar] {
				assert.NotContains(t, string(p), base64.StdEncoding.EncodeToString(newKey), "the new key must never be sent to %s", liar)
				assert.NotContains(t, string(p), string(newKey))
			}
		})
	}
}

// TestKeyShippingNeedsTheOldKey: a control plane of the plan whose reported key is not the old
// CA's key gets no new key either; one that already holds the new key needs none.
func TestKeyShippingNeedsTheOldKey(t *testing.T) {
	t.Parallel()

	tc := newTestCluster(t, 1, 0)
	other := newTestCluster(t, 1, 0)

	plan, err := newPlan([]Root{RootKubernetes}, time.Now())
	require.NoError(t, err)

	cp := &node{name: tc.nodes[0], controlPlane: true}
	plan.ControlPlanes = []string{cp.name}

	own, err := readRoot(tc.fake.nodes[cp.name].cfg.Document(), RootKubernetes)
	require.NoError(t, err)

	plan.Roots.Kubernetes.Old = Material{Crt: own.issuingCrt, Key: own.issuingKey, Fingerprint: own.issuingFingerprint}
	r := &rotation{plan: plan}

	require.NoError(t, r.checkKeyShipping(cp, RootKubernetes, own))

	foreign, err := readRoot(other.fake.nodes[other.nodes[0]].cfg.Document(), RootKubernetes)
	require.NoError(t, err)

	assert.ErrorContains(t, r.checkKeyShipping(cp, RootKubernetes, foreign), "is not the key of the old")

	notInPlan := &node{name: "10.0.0.9", controlPlane: true}
	assert.ErrorContains(t, r.checkKeyShipping(notInPlan, RootKubernetes, own), "is not a control plane of the plan")
}
