package pki_test

import (
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// pool is the expected content of an AcceptedCA in terms of fingerprints.
type pool struct {
	fingerprints []string
	issuing      string
}

func publicKeyFingerprint(t testing.TB, keyPEM []byte) string {
	t.Helper()

	pub, err := certs.ParsePublicKey(keyPEM)
	require.NoError(t, err)

	fp, err := certs.PublicKeyFingerprint(pub)
	require.NoError(t, err)

	return fp
}

func TestAcceptedCAs(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	oldOS, oldK8s, oldEtcd, oldAggregator := ctest.NewCA(t, certs.RootOS), ctest.NewCA(t, certs.RootKubernetes), ctest.NewCA(t, certs.RootEtcd), ctest.NewCA(t, certs.RootAggregator)

	oldSAKey, err := certs.NewServiceAccountKey()
	require.NoError(t, err)

	oldSAPublic, err := certs.PublicKeyPEM(oldSAKey)
	require.NoError(t, err)

	saFP, oldSAFP := publicKeyFingerprint(t, s.ServiceAccount), publicKeyFingerprint(t, oldSAKey)

	for _, tc := range []struct {
		name string
		doc  func() *machineconfig.Document
		want map[resource.ID]pool
	}{
		{
			name: "control plane, issuing only",
			doc:  func() *machineconfig.Document { return ctest.ControlPlane(s) },
			want: map[resource.ID]pool{
				pki.RootOS:             {[]string{s.OS.Fingerprint(t)}, s.OS.Fingerprint(t)},
				pki.RootKubernetes:     {[]string{s.Kubernetes.Fingerprint(t)}, s.Kubernetes.Fingerprint(t)},
				pki.RootEtcd:           {[]string{s.Etcd.Fingerprint(t)}, s.Etcd.Fingerprint(t)},
				pki.RootAggregator:     {[]string{s.Aggregator.Fingerprint(t)}, s.Aggregator.Fingerprint(t)},
				pki.RootServiceAccount: {[]string{saFP}, saFP},
			},
		},
		{
			name: "accepted first, issuing last, duplicates dropped",
			doc: func() *machineconfig.Document {
				doc := ctest.ControlPlane(s)
				// The issuing CA listed as accepted too, and an accepted CA listed twice.
				doc.Machine.AcceptedCAs = []*machineconfig.Certificate{s.OS.Accepted(), oldOS.Accepted(), oldOS.Accepted()}
				doc.Cluster.AcceptedCAs = []*machineconfig.Certificate{oldK8s.Accepted()}
				doc.Cluster.Etcd.AcceptedCAs = []*machineconfig.Certificate{oldEtcd.Accepted()}
				doc.Cluster.AcceptedAggregatorCAs = []*machineconfig.Certificate{oldAggregator.Accepted()}
				// The same key in private and public form counts once.
				doc.Cluster.AcceptedServiceAccountKeys = []*machineconfig.Key{{Key: oldSAKey}, {Key: oldSAPublic}, {Key: s.ServiceAccount}}

				return doc
			},
			want: map[resource.ID]pool{
				pki.RootOS:             {[]string{oldOS.Fingerprint(t), s.OS.Fingerprint(t)}, s.OS.Fingerprint(t)},
				pki.RootKubernetes:     {[]string{oldK8s.Fingerprint(t), s.Kubernetes.Fingerprint(t)}, s.Kubernetes.Fingerprint(t)},
				pki.RootEtcd:           {[]string{oldEtcd.Fingerprint(t), s.Etcd.Fingerprint(t)}, s.Etcd.Fingerprint(t)},
				pki.RootAggregator:     {[]string{oldAggregator.Fingerprint(t), s.Aggregator.Fingerprint(t)}, s.Aggregator.Fingerprint(t)},
				pki.RootServiceAccount: {[]string{oldSAFP, saFP}, saFP},
			},
		},
		{
			name: "worker",
			doc: func() *machineconfig.Document {
				doc := ctest.Worker(s)
				doc.Machine.AcceptedCAs = []*machineconfig.Certificate{oldOS.Accepted()}

				return doc
			},
			want: map[resource.ID]pool{
				pki.RootOS:         {[]string{oldOS.Fingerprint(t), s.OS.Fingerprint(t)}, s.OS.Fingerprint(t)},
				pki.RootKubernetes: {[]string{s.Kubernetes.Fingerprint(t)}, s.Kubernetes.Fingerprint(t)},
			},
		},
		{
			name: "accepted CAs without an issuing CA",
			doc: func() *machineconfig.Document {
				doc := ctest.Worker(s)
				doc.Machine.CA = nil
				doc.Machine.AcceptedCAs = []*machineconfig.Certificate{oldOS.Accepted(), s.OS.Accepted()}
				doc.Cluster.CA = nil

				return doc
			},
			want: map[resource.ID]pool{
				pki.RootOS: {[]string{oldOS.Fingerprint(t), s.OS.Fingerprint(t)}, ""},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			env := ctest.Run(t, ctrlpki.NewAcceptedCAsController())
			env.SetMachineConfig(t, tc.doc())

			assertAcceptedCAs(t, env, tc.want)
		})
	}
}

func assertAcceptedCAs(t *testing.T, env *ctest.Env, want map[resource.ID]pool) {
	t.Helper()

	for id, p := range want {
		rtestutils.AssertResource(env.Ctx, t, env.State, id, func(res *pki.AcceptedCA, a *assert.Assertions) {
			spec := res.TypedSpec()

			a.Equal(p.fingerprints, spec.Fingerprints)
			a.Equal(p.issuing, spec.IssuingFingerprint)

			// Tables show 12 hex digits of each fingerprint.
			a.Len(spec.ShortFingerprints, len(p.fingerprints))

			for i, short := range spec.ShortFingerprints {
				a.Equal(p.fingerprints[i][:12], short)
			}

			a.Equal(p.issuing[:min(len(p.issuing), 12)], spec.IssuingShortFingerprint)

			// The PEM entries match the fingerprints, in the same order.
			var got []string

			if id == pki.RootServiceAccount {
				a.Empty(spec.Certificates)

				for _, key := range spec.PublicKeys {
					got = append(got, publicKeyFingerprint(t, []byte(key)))
					a.Contains(key, "PUBLIC KEY", "only public keys are published")
				}
			} else {
				a.Empty(spec.PublicKeys)

				for _, crt := range spec.Certificates {
					got = append(got, certs.Fingerprint(parseCertificate(t, crt)))
				}
			}

			a.Equal(p.fingerprints, got)
		})
	}

	for _, id := range pki.AllRoots() {
		if _, ok := want[id]; !ok {
			rtestutils.AssertNoResource[*pki.AcceptedCA](env.Ctx, t, env.State, id)
		}
	}
}

func TestAcceptedCAsFollowConfig(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := ctest.Run(t, ctrlpki.NewAcceptedCAsController())

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	rtestutils.AssertLength[*pki.AcceptedCA](env.Ctx, t, env.State, len(pki.AllRoots()))

	before := versions[*pki.AcceptedCA](t, env)

	other := ctest.NewCA(t, certs.RootEtcd)
	doc := ctest.ControlPlane(s)
	doc.Cluster.ClusterName = "renamed"
	doc.Cluster.Etcd.AcceptedCAs = []*machineconfig.Certificate{other.Accepted()}
	env.SetMachineConfig(t, doc)

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.RootEtcd, func(res *pki.AcceptedCA, a *assert.Assertions) {
		a.Equal([]string{other.Fingerprint(t), s.Etcd.Fingerprint(t)}, res.TypedSpec().Fingerprints)
	})

	after := versions[*pki.AcceptedCA](t, env)
	delete(before, pki.RootEtcd)
	delete(after, pki.RootEtcd)
	require.Equal(t, before, after, "pools were rewritten without a change")

	env.SetMachineConfig(t, ctest.Worker(s))
	assertAcceptedCAs(t, env, map[resource.ID]pool{
		pki.RootOS:         {[]string{s.OS.Fingerprint(t)}, s.OS.Fingerprint(t)},
		pki.RootKubernetes: {[]string{s.Kubernetes.Fingerprint(t)}, s.Kubernetes.Fingerprint(t)},
	})
}
