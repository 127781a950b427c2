package pki

import (
	"context"
	"fmt"
	"reflect"
	"slices"

	"github.com/nodepki/nodepki/controllers/configview"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// RootSecretsController produces one pki.RootSecret per root the machine config has material for:
// the issuing CA certificate, its key only where the node may issue (control planes), and the
// trustd tokens for the os root.
type RootSecretsController struct {
	config configview.Cache
}

// Name implements controller.Controller interface.
func (ctrl *RootSecretsController) Name() string {
	return "pki.RootSecretsController"
}

// Inputs implements controller.Controller interface.
func (ctrl *RootSecretsController) Inputs() []controller.Input {
	return []controller.Input{configview.Input()}
}

// Outputs implements controller.Controller interface.
func (ctrl *RootSecretsController) Outputs() []controller.Output {
	return []controller.Output{{Type: pki.RootSecretsType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller interface.
func (ctrl *RootSecretsController) Run(ctx context.Context, r controller.Runtime, _ *zap.Logger) error {
	// written are the root secrets as the last pass wrote them: a config change rewrites most of
	// them, and updating them directly is cheaper than Modify (see writeSpec).
	var written map[resource.ID]*pki.RootSecret

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		}

		doc, err := configview.Read(ctx, r, &ctrl.config)
		if err != nil {
			return err
		}

		r.StartTrackingOutputs()

		specs := rootSecrets(doc)
		next := make(map[resource.ID]*pki.RootSecret, len(specs))

		for id, spec := range specs {
			last := written[id]
			if last != nil && reflect.DeepEqual(*last.TypedSpec(), spec) {
				// Unchanged: Modify writes nothing, but marks it as an output of this pass.
				last = nil
			}

			if next[id], err = writeSpec(ctx, r, last, pki.NewRootSecret(id), spec); err != nil {
				return fmt.Errorf("error updating root secret %q: %w", id, err)
			}
		}

		written = next

		if err = safe.CleanupOutputs[*pki.RootSecret](ctx, r); err != nil {
			return fmt.Errorf("error cleaning up root secrets: %w", err)
		}
	}
}

// rootSecrets maps the machine config to the root secrets it defines; roots without any material
// are left out.
func rootSecrets(doc *machineconfig.Document) map[resource.ID]pki.RootSecretSpec {
	out := map[resource.ID]pki.RootSecretSpec{}

	if doc == nil {
		return out
	}

	machine := doc.Machine
	cluster := doc.Cluster
	mayIssue := machine.IsControlPlane()

	if machine == nil {
		machine = &machineconfig.MachineSection{}
	}

	if cluster == nil {
		cluster = &machineconfig.ClusterSection{}
	}

	var etcdCA *machineconfig.CertificateAndKey
	if cluster.Etcd != nil {
		etcdCA = cluster.Etcd.CA
	}

	add := func(id resource.ID, spec pki.RootSecretSpec) {
		if spec.IssuingCert != "" || spec.IssuingKey != "" || len(spec.Tokens) > 0 {
			out[id] = spec
		}
	}

	osRoot := issuing(machine.CA, mayIssue)
	osRoot.Tokens = tokens(machine.Token, machine.AcceptedTokens)

	add(pki.RootOS, osRoot)
	add(pki.RootKubernetes, issuing(cluster.CA, mayIssue))
	add(pki.RootEtcd, issuing(etcdCA, mayIssue))
	add(pki.RootAggregator, issuing(cluster.AggregatorCA, mayIssue))

	if mayIssue && cluster.ServiceAccount != nil {
		add(pki.RootServiceAccount, pki.RootSecretSpec{IssuingKey: string(cluster.ServiceAccount.Key)})
	}

	return out
}

func issuing(ca *machineconfig.CertificateAndKey, mayIssue bool) pki.RootSecretSpec {
	if ca == nil {
		return pki.RootSecretSpec{}
	}

	spec := pki.RootSecretSpec{IssuingCert: string(ca.Crt)}

	if mayIssue {
		spec.IssuingKey = string(ca.Key)
	}

	return spec
}

// tokens lists the trustd tokens in order of preference, without blanks and repeats.
func tokens(token string, accepted []string) []string {
	var out []string

	for _, t := range append([]string{token}, accepted...) {
		if t != "" && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}

	return out
}
