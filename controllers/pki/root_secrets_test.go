package pki_test

import (
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

func TestRootSecrets(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)

	for _, tc := range []struct {
		name string
		doc  func() *machineconfig.Document
		want map[resource.ID]pki.RootSecretSpec
	}{
		{
			name: "control plane holds every key",
			doc: func() *machineconfig.Document {
				doc := ctest.ControlPlane(s)
				doc.Machine.AcceptedTokens = []string{"old.token", s.Token, "", "older.token"}

				return doc
			},
			want: map[resource.ID]pki.RootSecretSpec{
				pki.RootOS:             {IssuingCert: string(s.OS.Crt), IssuingKey: string(s.OS.Key), Tokens: []string{s.Token, "old.token", "older.token"}},
				pki.RootKubernetes:     {IssuingCert: string(s.Kubernetes.Crt), IssuingKey: string(s.Kubernetes.Key)},
				pki.RootEtcd:           {IssuingCert: string(s.Etcd.Crt), IssuingKey: string(s.Etcd.Key)},
				pki.RootAggregator:     {IssuingCert: string(s.Aggregator.Crt), IssuingKey: string(s.Aggregator.Key)},
				pki.RootServiceAccount: {IssuingKey: string(s.ServiceAccount)},
			},
		},
		{
			name: "worker has certificates only",
			doc:  func() *machineconfig.Document { return ctest.Worker(s) },
			want: map[resource.ID]pki.RootSecretSpec{
				pki.RootOS:         {IssuingCert: string(s.OS.Crt), Tokens: []string{s.Token}},
				pki.RootKubernetes: {IssuingCert: string(s.Kubernetes.Crt)},
			},
		},
		{
			name: "keys in a worker config are not carried",
			doc: func() *machineconfig.Document {
				doc := ctest.ControlPlane(s)
				doc.Machine.Type = machineconfig.TypeWorker

				return doc
			},
			want: map[resource.ID]pki.RootSecretSpec{
				pki.RootOS:         {IssuingCert: string(s.OS.Crt), Tokens: []string{s.Token}},
				pki.RootKubernetes: {IssuingCert: string(s.Kubernetes.Crt)},
				pki.RootEtcd:       {IssuingCert: string(s.Etcd.Crt)},
				pki.RootAggregator: {IssuingCert: string(s.Aggregator.Crt)},
			},
		},
		{
			name: "init node issues",
			doc: func() *machineconfig.Document {
				doc := ctest.ControlPlane(s)
				doc.Machine.Type = machineconfig.TypeInit
				doc.Cluster.AggregatorCA = nil
				doc.Cluster.ServiceAccount = nil

				return doc
			},
			want: map[resource.ID]pki.RootSecretSpec{
				pki.RootOS:         {IssuingCert: string(s.OS.Crt), IssuingKey: string(s.OS.Key), Tokens: []string{s.Token}},
				pki.RootKubernetes: {IssuingCert: string(s.Kubernetes.Crt), IssuingKey: string(s.Kubernetes.Key)},
				pki.RootEtcd:       {IssuingCert: string(s.Etcd.Crt), IssuingKey: string(s.Etcd.Key)},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			env := ctest.Run(t, ctrlpki.NewRootSecretsController())
			env.SetMachineConfig(t, tc.doc())

			assertRootSecrets(t, env, tc.want)
		})
	}
}

func assertRootSecrets(t *testing.T, env *ctest.Env, want map[resource.ID]pki.RootSecretSpec) {
	t.Helper()

	for id, spec := range want {
		rtestutils.AssertResource(env.Ctx, t, env.State, id, func(res *pki.RootSecret, a *assert.Assertions) {
			a.Equal(spec, *res.TypedSpec())
		})
	}

	for _, id := range pki.AllRoots() {
		if _, ok := want[id]; !ok {
			rtestutils.AssertNoResource[*pki.RootSecret](env.Ctx, t, env.State, id)
		}
	}
}

func TestRootSecretsFollowConfig(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := ctest.Run(t, ctrlpki.NewRootSecretsController())

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	rtestutils.AssertLength[*pki.RootSecret](env.Ctx, t, env.State, len(pki.AllRoots()))

	before := versions[*pki.RootSecret](t, env)

	// A change the roots do not depend on rewrites nothing.
	doc := ctest.ControlPlane(s)
	doc.Cluster.ClusterName = "renamed"
	env.SetMachineConfig(t, doc)

	// Wait for the controller to have seen the new config: a config it reacts to, applied after.
	doc.Machine.AcceptedTokens = []string{"next.token"}
	env.SetMachineConfig(t, doc)
	rtestutils.AssertResource(env.Ctx, t, env.State, pki.RootOS, func(res *pki.RootSecret, a *assert.Assertions) {
		a.Equal([]string{s.Token, "next.token"}, res.TypedSpec().Tokens)
	})

	after := versions[*pki.RootSecret](t, env)
	delete(before, pki.RootOS)
	delete(after, pki.RootOS)
	require.Equal(t, before, after, "roots were rewritten without a change")

	// Becoming a worker drops the keys and the roots a worker has no material for.
	env.SetMachineConfig(t, ctest.Worker(s))
	assertRootSecrets(t, env, map[resource.ID]pki.RootSecretSpec{
		pki.RootOS:         {IssuingCert: string(s.OS.Crt), Tokens: []string{s.Token}},
		pki.RootKubernetes: {IssuingCert: string(s.Kubernetes.Crt)},
	})

	env.DeleteMachineConfig(t)
	assertRootSecrets(t, env, nil)
}
