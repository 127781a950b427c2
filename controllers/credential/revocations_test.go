package credential_test

import (
	"strings"
	"testing"

	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/stretchr/testify/assert"

	"github.com/nodepki/nodepki/controllers/credential"
	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/resources/pki"
)

func TestRevocationsFollowConfig(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := ctest.Run(t, &credential.RevocationsController{})

	assertEntries := func(want []revocation.Entry) {
		t.Helper()

		rtestutils.AssertResource(env.Ctx, t, env.State, pki.RevocationsID, func(res *pki.Revocations, a *assert.Assertions) {
			a.Equal(want, res.TypedSpec().Entries)
		})
	}

	assertEntries(nil)

	entries := []revocation.Entry{
		{Fingerprint: strings.Repeat("a", 64), Reason: "laptop lost"},
		{Serial: "0ABC", Issuer: strings.Repeat("b", 64), NotAfter: "2027-01-01T00:00:00Z"},
	}

	doc := ctest.ControlPlane(s)
	doc.Machine.RevokedCertificates = entries
	env.SetMachineConfig(t, doc)
	assertEntries(entries)

	env.SetMachineConfig(t, ctest.Worker(s))
	assertEntries(nil)

	env.SetMachineConfig(t, doc)
	assertEntries(entries)

	env.DeleteMachineConfig(t)
	assertEntries(nil)
}
