package pki

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/resources/pki"
)

// SecurityStatusController sums up the node's PKI posture in one pki.SecurityStatus from its
// RootSecrets (which CA keys it holds), CertificateStatuses (leaves) and CAStatuses (CAs).
//
// It reads the states CertificateStatusesController computes with the clock instead of reading
// the clock itself, so it changes when they do, at most securityStatusInterval later: a burst of
// status changes is summed up twice (at its first change and once after), not once per change.
// It is a DerivedController because its one output sums up many inputs of several types.
type SecurityStatusController = DerivedController[pki.SecurityStatusSpec, pki.SecurityStatusExtension]

// NewSecurityStatusController creates a SecurityStatusController; apiTLSVersions are the TLS
// versions the node API accepts, which the runtime that serves it knows.
func NewSecurityStatusController(apiTLSVersions []string) *SecurityStatusController {
	apiTLSVersions = slices.Clone(apiTLSVersions)

	return newDerivedController[pki.SecurityStatusSpec, pki.SecurityStatusExtension]("pki.SecurityStatusController",
		[]controller.Input{
			{Namespace: pki.NamespaceName, Type: pki.RootSecretsType, Kind: controller.InputWeak},
			{Namespace: pki.NamespaceName, Type: pki.CertificateStatusesType, Kind: controller.InputWeak},
			{Namespace: pki.NamespaceName, Type: pki.CAStatusesType, Kind: controller.InputWeak},
		},
		func(ctx context.Context, r controller.Reader, _ *zap.Logger) (map[resource.ID]pki.SecurityStatusSpec, bool, error) {
			roots, err := safe.ReaderListAll[*pki.RootSecret](ctx, r)
			if err != nil {
				return nil, false, fmt.Errorf("error listing root secrets: %w", err)
			}

			leaves, err := safe.ReaderListAll[*pki.CertificateStatus](ctx, r)
			if err != nil {
				return nil, false, fmt.Errorf("error listing certificate statuses: %w", err)
			}

			cas, err := safe.ReaderListAll[*pki.CAStatus](ctx, r)
			if err != nil {
				return nil, false, fmt.Errorf("error listing CA statuses: %w", err)
			}

			spec := securityStatus(slices.Collect(roots.All()), slices.Collect(leaves.All()), slices.Collect(cas.All()))
			spec.APITLSVersions = apiTLSVersions

			return map[resource.ID]pki.SecurityStatusSpec{pki.SecurityStatusID: spec}, true, nil
		}).withMinInterval(securityStatusInterval)
}

// securityStatusInterval is how often at most the summary is recomputed: it is read by people
// and monitoring, and a rotation step rewrites a dozen statuses it sums up within milliseconds.
const securityStatusInterval = 100 * time.Millisecond

// securityStatus sums up the node's roots, leaves and CAs; the state lists them in ID order.
func securityStatus(roots []*pki.RootSecret, leaves []*pki.CertificateStatus, cas []*pki.CAStatus) pki.SecurityStatusSpec {
	spec := pki.SecurityStatusSpec{CAKeys: []string{}, Leaves: len(leaves), LeavesTrusted: true, LeavesUnexpired: true}

	for _, id := range pki.AllRoots() {
		if slices.ContainsFunc(roots, func(root *pki.RootSecret) bool {
			return root.Metadata().ID() == id && root.TypedSpec().IssuingKey != ""
		}) {
			spec.CAKeys = append(spec.CAKeys, id)
		}
	}

	earliest := func(t time.Time, of string) {
		if !t.IsZero() && (spec.EarliestExpiry.IsZero() || t.Before(spec.EarliestExpiry.Time)) {
			spec.EarliestExpiry, spec.EarliestExpiryOf = pki.NewTime(t), of
		}
	}

	for _, leaf := range leaves {
		status := leaf.TypedSpec()

		switch status.State {
		case pki.StateValid, pki.StateRenewing:
		default:
			spec.Problems = append(spec.Problems, leaf.Metadata().ID()+": "+status.State)
		}

		if !status.Trusted {
			spec.LeavesTrusted = false
		}

		if status.State == pki.StateExpired || status.State == pki.StatePending {
			spec.LeavesUnexpired = false
		}

		earliest(status.NotAfter.Time, "certificate/"+leaf.Metadata().ID())
	}

	for _, ca := range cas {
		earliest(ca.TypedSpec().NotAfter.Time, "ca/"+ca.Metadata().ID())
	}

	return spec
}
