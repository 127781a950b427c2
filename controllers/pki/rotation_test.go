package pki_test

import (
	"slices"
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// setRoot makes issuing the issuing CA of a root in doc and accepted its accepted CAs.
func setRoot(doc *machineconfig.Document, root resource.ID, issuing ctest.CA, accepted ...ctest.CA) {
	list := make([]*machineconfig.Certificate, 0, len(accepted))
	for _, ca := range accepted {
		list = append(list, ca.Accepted())
	}

	switch root {
	case pki.RootOS:
		doc.Machine.CA, doc.Machine.AcceptedCAs = issuing.Pair(), list
	case pki.RootKubernetes:
		doc.Cluster.CA, doc.Cluster.AcceptedCAs = issuing.Pair(), list
	case pki.RootEtcd:
		doc.Cluster.Etcd.CA, doc.Cluster.Etcd.AcceptedCAs = issuing.Pair(), list
	case pki.RootAggregator:
		doc.Cluster.AggregatorCA, doc.Cluster.AcceptedAggregatorCAs = issuing.Pair(), list
	}
}

// TestRotationWalk rotates each CA root by editing the machine config only, as rotate-ca does.
func TestRotationWalk(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		root resource.ID
		kind string
	}{
		{pki.RootOS, certs.RootOS},
		{pki.RootKubernetes, certs.RootKubernetes},
		{pki.RootEtcd, certs.RootEtcd},
		{pki.RootAggregator, certs.RootAggregator},
	} {
		t.Run(tc.root, func(t *testing.T) {
			t.Parallel()

			s := ctest.NewSecrets(t)
			rootOf := map[resource.ID]ctest.CA{pki.RootOS: s.OS, pki.RootKubernetes: s.Kubernetes, pki.RootEtcd: s.Etcd, pki.RootAggregator: s.Aggregator}
			oldCA, newCA := rootOf[tc.root], ctest.NewCA(t, tc.kind)
			oldFP, newFP := oldCA.Fingerprint(t), newCA.Fingerprint(t)
			rotated := leafIDsOf(t, tc.root)

			env := runGraph(t)
			doc := ctest.ControlPlane(s)
			env.SetMachineConfig(t, doc)
			assertAllIssued(t, env, leafIDs(t))

			initial := certificateSerials(t, env)

			// 1. Accept the new CA: both are accepted, nothing is reissued, the bundles carry both.
			setRoot(doc, tc.root, oldCA, newCA)
			env.SetMachineConfig(t, doc)

			assertPool(t, env, tc.root, []string{newFP, oldFP}, oldFP)
			rtestutils.AssertResources(env.Ctx, t, env.State, rotated, func(res *pki.NodeCertificate, a *assert.Assertions) {
				a.Equal(string(newCA.Crt)+string(oldCA.Crt), res.TypedSpec().CABundle)
			})
			require.Equal(t, initial, certificateSerials(t, env), "accepting a CA reissued certificates")

			// 2. Switch the issuer: every certificate of the root is reissued by the new CA and trusted.
			setRoot(doc, tc.root, newCA, oldCA)
			env.SetMachineConfig(t, doc)

			assertPool(t, env, tc.root, []string{oldFP, newFP}, newFP)
			rtestutils.AssertResources(env.Ctx, t, env.State, rotated, func(res *pki.NodeCertificate, a *assert.Assertions) {
				a.Equal(newFP, res.TypedSpec().IssuerFingerprint)
				a.NoError(parseCertificate(t, res.TypedSpec().Certificate).CheckSignatureFrom(parseCertificate(t, string(newCA.Crt))))
			})
			rtestutils.AssertResources(env.Ctx, t, env.State, rotated, func(res *pki.CertificateStatus, a *assert.Assertions) {
				a.Equal(newFP, res.TypedSpec().IssuerFingerprint)
				a.True(res.TypedSpec().Trusted)
				a.Equal(pki.StateValid, res.TypedSpec().State)
			})

			switched := certificateSerials(t, env)

			for _, id := range leafIDs(t) {
				if slices.Contains(rotated, id) {
					require.NotEqual(t, initial[id], switched[id], "%s was not reissued", id)
				} else {
					require.Equal(t, initial[id], switched[id], "%s of another root was reissued", id)
				}
			}

			// 3. Drop the old CA: only the new one is accepted, the certificates stay trusted.
			setRoot(doc, tc.root, newCA)
			env.SetMachineConfig(t, doc)

			assertPool(t, env, tc.root, []string{newFP}, newFP)
			rtestutils.AssertResources(env.Ctx, t, env.State, rotated, func(res *pki.NodeCertificate, a *assert.Assertions) {
				a.Equal(string(newCA.Crt), res.TypedSpec().CABundle)
			})
			rtestutils.AssertResources(env.Ctx, t, env.State, rotated, func(res *pki.CertificateStatus, a *assert.Assertions) {
				a.Equal(newFP, res.TypedSpec().IssuerFingerprint)
				a.True(res.TypedSpec().Trusted)
				a.Equal(pki.StateValid, res.TypedSpec().State)
			})
			require.Equal(t, switched, certificateSerials(t, env), "dropping the old CA reissued certificates")
		})
	}
}

func TestRotationWalkServiceAccount(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)

	newKey, err := certs.NewServiceAccountKey()
	require.NoError(t, err)

	oldFP, newFP := publicKeyFingerprint(t, s.ServiceAccount), publicKeyFingerprint(t, newKey)

	env := runGraph(t)
	doc := ctest.ControlPlane(s)
	env.SetMachineConfig(t, doc)
	assertPool(t, env, pki.RootServiceAccount, []string{oldFP}, oldFP)

	// 1. Accept the new key (its public half is enough).
	newPublic, err := certs.PublicKeyPEM(newKey)
	require.NoError(t, err)

	doc.Cluster.AcceptedServiceAccountKeys = []*machineconfig.Key{{Key: newPublic}}
	env.SetMachineConfig(t, doc)
	assertPool(t, env, pki.RootServiceAccount, []string{newFP, oldFP}, oldFP)

	// 2. Switch the signing key; the old one stays accepted.
	doc.Cluster.ServiceAccount = &machineconfig.Key{Key: newKey}
	doc.Cluster.AcceptedServiceAccountKeys = []*machineconfig.Key{{Key: s.ServiceAccount}}
	env.SetMachineConfig(t, doc)
	assertPool(t, env, pki.RootServiceAccount, []string{oldFP, newFP}, newFP)
	rtestutils.AssertResource(env.Ctx, t, env.State, pki.RootServiceAccount, func(res *pki.RootSecret, a *assert.Assertions) {
		a.Equal(string(newKey), res.TypedSpec().IssuingKey)
	})

	// 3. Drop the old key.
	doc.Cluster.AcceptedServiceAccountKeys = nil
	env.SetMachineConfig(t, doc)
	assertPool(t, env, pki.RootServiceAccount, []string{newFP}, newFP)
}

func assertPool(t *testing.T, env *ctest.Env, root resource.ID, fingerprints []string, issuing string) {
	t.Helper()

	rtestutils.AssertResource(env.Ctx, t, env.State, root, func(res *pki.AcceptedCA, a *assert.Assertions) {
		a.Equal(fingerprints, res.TypedSpec().Fingerprints)
		a.Equal(issuing, res.TypedSpec().IssuingFingerprint)
	})
}
