package configview_test

import (
	"testing"

	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/config"
)

// decoded is the document as configview.Decode reads it from the config file.
func decoded(t *testing.T, doc *machineconfig.Document) *machineconfig.Document {
	t.Helper()

	out, err := configview.Decode(ctest.Marshal(t, doc))
	require.NoError(t, err)

	return out
}

// TestMachineConfigView: the view follows the active config, change by change, and goes with it.
func TestMachineConfigView(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := ctest.Run(t) // the harness runs MachineConfigViewController for every test

	env.SetMachineConfig(t, ctest.Worker(s))
	rtestutils.AssertResource(env.Ctx, t, env.State, config.ActiveID, func(view *config.MachineConfigView, a *assert.Assertions) {
		a.Equal(decoded(t, ctest.Worker(s)), view.TypedSpec().Document)
		a.Equal("1", view.TypedSpec().ConfigVersion)
	})

	doc := ctest.ControlPlane(s)
	doc.Machine.CertSANs = []string{"api.example.test"}
	env.SetMachineConfig(t, doc)
	rtestutils.AssertResource(env.Ctx, t, env.State, config.ActiveID, func(view *config.MachineConfigView, a *assert.Assertions) {
		a.Equal(decoded(t, doc), view.TypedSpec().Document)
		a.Equal("2", view.TypedSpec().ConfigVersion)
	})

	env.DeleteMachineConfig(t)
	rtestutils.AssertNoResource[*config.MachineConfigView](env.Ctx, t, env.State, config.ActiveID)
}
