// Package credential owns the controller that publishes machine.revokedCertificates as the
// pki.Revocations resource the node API enforces.
package credential

import (
	"context"
	"fmt"
	"slices"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/resources/pki"
)

// RevocationsController produces pki.Revocations/client from the active machine config; without a
// config the list is empty, so the API never waits for it.
type RevocationsController struct{}

// Name implements controller.Controller interface.
func (ctrl *RevocationsController) Name() string {
	return "credential.RevocationsController"
}

// Inputs implements controller.Controller interface.
func (ctrl *RevocationsController) Inputs() []controller.Input {
	return []controller.Input{configview.Input()}
}

// Outputs implements controller.Controller interface.
func (ctrl *RevocationsController) Outputs() []controller.Output {
	return []controller.Output{{Type: pki.RevocationsType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller interface.
func (ctrl *RevocationsController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		}

		doc, err := configview.Read(ctx, r)
		if err != nil {
			return err
		}

		var entries []revocation.Entry

		if doc != nil && doc.Machine != nil {
			entries = doc.Machine.RevokedCertificates
		}

		if err = safe.WriterModify(ctx, r, pki.NewRevocations(pki.RevocationsID), func(res *pki.Revocations) error {
			if !slices.Equal(res.TypedSpec().Entries, entries) {
				logger.Info("revoked client credentials updated", zap.Int("entries", len(entries)))
			}

			res.TypedSpec().Entries = slices.Clone(entries)

			return nil
		}); err != nil {
			return fmt.Errorf("error writing revocations: %w", err)
		}

		r.ResetRestartBackoff()
	}
}
