package pki_test

import (
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/stretchr/testify/assert"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

func TestCAStatuses(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	oldOS := ctest.NewCA(t, certs.RootOS)

	env := ctest.Run(t, ctrlpki.NewAcceptedCAsController(), ctrlpki.NewCAStatusesController())

	id := func(root resource.ID, ca ctest.CA) resource.ID {
		return root + "-" + ca.Fingerprint(t)[:12]
	}

	doc := ctest.ControlPlane(s)
	doc.Machine.AcceptedCAs = []*machineconfig.Certificate{oldOS.Accepted()}
	env.SetMachineConfig(t, doc)

	want := map[resource.ID]struct {
		root resource.ID
		ca   ctest.CA
		role string
	}{
		id(pki.RootOS, s.OS):                 {pki.RootOS, s.OS, pki.CARoleIssuing},
		id(pki.RootOS, oldOS):                {pki.RootOS, oldOS, pki.CARoleAccepted},
		id(pki.RootKubernetes, s.Kubernetes): {pki.RootKubernetes, s.Kubernetes, pki.CARoleIssuing},
		id(pki.RootEtcd, s.Etcd):             {pki.RootEtcd, s.Etcd, pki.CARoleIssuing},
		id(pki.RootAggregator, s.Aggregator): {pki.RootAggregator, s.Aggregator, pki.CARoleIssuing},
	}

	rtestutils.AssertResources(env.Ctx, t, env.State, mapsKeys(want), func(res *pki.CAStatus, a *assert.Assertions) {
		w := want[res.Metadata().ID()]
		crt := parseCertificate(t, string(w.ca.Crt))
		spec := res.TypedSpec()

		a.Equal(string(w.root), spec.Root)
		a.Equal(w.role, spec.Role)
		a.Equal(w.ca.Fingerprint(t), spec.Fingerprint)
		a.Equal(w.ca.Fingerprint(t)[:12], spec.ShortFingerprint)
		a.Equal(crt.Subject.String(), spec.Subject)
		a.Equal(pki.NewTime(crt.NotBefore), spec.NotBefore)
		a.Equal(pki.NewTime(crt.NotAfter), spec.NotAfter)
	})

	// The service-account root has keys, not CAs: nothing beyond the five above.
	rtestutils.AssertLength[*pki.CAStatus](env.Ctx, t, env.State, len(want))

	// The old CA leaves the pool: its status goes, the issuing ones stay.
	env.SetMachineConfig(t, ctest.ControlPlane(s))

	rtestutils.AssertNoResource[*pki.CAStatus](env.Ctx, t, env.State, id(pki.RootOS, oldOS))
	rtestutils.AssertLength[*pki.CAStatus](env.Ctx, t, env.State, len(want)-1)
}

func mapsKeys[V any](m map[resource.ID]V) []resource.ID {
	out := make([]resource.ID, 0, len(m))
	for k := range m {
		out = append(out, k)
	}

	return out
}
