package configview

import (
	"context"
	"fmt"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/controller/generic/transform"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/resources/config"
)

// MachineConfigViewController decodes the active MachineConfig into the config.MachineConfigView
// that every config reader takes as its input (see Input and Read), so that a config change is
// decoded once rather than once per reader. A config that does not decode fails the controller,
// and the view keeps the last document that did; configs are validated before they are written.
type MachineConfigViewController = transform.Controller[*config.MachineConfig, *config.MachineConfigView]

// NewMachineConfigViewController creates a MachineConfigViewController.
func NewMachineConfigViewController() *MachineConfigViewController {
	return transform.NewController(
		transform.Settings[*config.MachineConfig, *config.MachineConfigView]{
			Name: "configview.MachineConfigViewController",
			MapMetadataOptionalFunc: func(mc *config.MachineConfig) optional.Optional[*config.MachineConfigView] {
				if mc.Metadata().ID() != config.ActiveID {
					return optional.None[*config.MachineConfigView]()
				}

				return optional.Some(config.NewMachineConfigView(config.ActiveID))
			},
			TransformFunc: func(_ context.Context, _ controller.Reader, _ *zap.Logger, mc *config.MachineConfig, view *config.MachineConfigView) error {
				version := mc.Metadata().Version().String()

				doc, err := Decode(mc.TypedSpec().Raw)
				if err != nil {
					return fmt.Errorf("error decoding machine config version %s: %w", version, err)
				}

				*view.TypedSpec() = config.MachineConfigViewSpec{ConfigVersion: version, Document: doc}

				return nil
			},
		},
	)
}
