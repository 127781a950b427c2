package pki

import (
	"context"
	"fmt"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/resources/pki"
)

// CAStatusesController reports every CA certificate of every root's trust pool as a pki.CAStatus:
// subject, validity, fingerprint and whether the root issues with it.
//
// It derives the pools from the machine config as AcceptedCAsController does (trustPools), rather
// than reading the AcceptedCAs: a config change then costs one pass with one parse of each CA,
// instead of a pass, re-parsing every pool, for each AcceptedCA written. It is a DerivedController
// because one pool holds several CAs, and cosi's transform controllers map one input to one output.
type CAStatusesController = DerivedController[pki.CAStatusSpec, pki.CAStatusExtension]

// NewCAStatusesController creates a CAStatusesController.
func NewCAStatusesController() *CAStatusesController {
	parser := &poolParser{}

	return newDerivedController[pki.CAStatusSpec, pki.CAStatusExtension]("pki.CAStatusesController",
		[]controller.Input{configview.Input()},
		func(ctx context.Context, r controller.Reader, _ *zap.Logger) (map[resource.ID]pki.CAStatusSpec, bool, error) {
			doc, err := configview.Read(ctx, r)
			if err != nil {
				return nil, false, err
			}

			pools, err := trustPools(doc, parser)
			if err != nil {
				return nil, false, fmt.Errorf("error building accepted CAs: %w", err)
			}

			out := map[resource.ID]pki.CAStatusSpec{}

			for root, pool := range pools {
				caStatuses(root, pool, out)
			}

			return out, true, nil
		})
}

// caStatuses adds the status of every CA certificate of one root's pool to out.
// The service-account root's pool holds public keys, which have no status.
func caStatuses(root resource.ID, pool *trustPool, out map[resource.ID]pki.CAStatusSpec) {
	for _, e := range pool.entries {
		crt, fingerprint := e.crt, e.fingerprint
		if crt == nil {
			continue
		}

		role := pki.CARoleAccepted
		if fingerprint == pool.issuingFingerprint {
			role = pki.CARoleIssuing
		}

		out[root+"-"+pki.ShortFingerprint(fingerprint)] = pki.CAStatusSpec{
			Root:             root,
			Subject:          crt.Subject.String(),
			Fingerprint:      fingerprint,
			ShortFingerprint: pki.ShortFingerprint(fingerprint),
			NotBefore:        pki.NewTime(crt.NotBefore),
			NotAfter:         pki.NewTime(crt.NotAfter),
			Role:             role,
		}
	}
}
