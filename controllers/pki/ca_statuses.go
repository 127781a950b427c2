package pki

import (
	"context"
	"fmt"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// CAStatusesController reports every CA certificate of every root's trust pool (AcceptedCAs) as a
// pki.CAStatus: subject, validity, fingerprint and whether the root issues with it.
//
// It is a DerivedController because one AcceptedCA holds several CAs, and cosi's transform
// controllers map one input to one output.
type CAStatusesController = DerivedController[pki.CAStatusSpec, pki.CAStatusExtension]

// NewCAStatusesController creates a CAStatusesController.
func NewCAStatusesController() *CAStatusesController {
	return newDerivedController[pki.CAStatusSpec, pki.CAStatusExtension]("pki.CAStatusesController",
		[]controller.Input{{Namespace: pki.NamespaceName, Type: pki.AcceptedCAsType, Kind: controller.InputWeak}},
		func(ctx context.Context, r controller.Reader, _ *zap.Logger) (map[resource.ID]pki.CAStatusSpec, bool, error) {
			pools, err := safe.ReaderListAll[*pki.AcceptedCA](ctx, r)
			if err != nil {
				return nil, false, fmt.Errorf("error listing accepted CAs: %w", err)
			}

			out := map[resource.ID]pki.CAStatusSpec{}

			for pool := range pools.All() {
				if err = caStatuses(pool.Metadata().ID(), pool.TypedSpec(), out); err != nil {
					return nil, false, err
				}
			}

			return out, true, nil
		})
}

// caStatuses adds the status of every CA certificate of one root's pool to out.
func caStatuses(root resource.ID, pool *pki.AcceptedCASpec, out map[resource.ID]pki.CAStatusSpec) error {
	for _, data := range pool.Certificates {
		crt, err := certs.ParseCertificate([]byte(data))
		if err != nil {
			// AcceptedCAs only holds certificates that parsed when the pool was built.
			return fmt.Errorf("error parsing a CA of root %q: %w", root, err)
		}

		fingerprint := certs.Fingerprint(crt)

		role := pki.CARoleAccepted
		if fingerprint == pool.IssuingFingerprint {
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

	return nil
}
