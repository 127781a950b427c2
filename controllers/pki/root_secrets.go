package pki

import (
	"context"
	"slices"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// RootSecretsController produces one pki.RootSecret per root the machine config has material for:
// the issuing CA certificate, its key only where the node may issue (control planes), and the
// trustd tokens for the os root.
type RootSecretsController = DerivedController[pki.RootSecretSpec, pki.RootSecretExtension]

// NewRootSecretsController creates a RootSecretsController.
func NewRootSecretsController() *RootSecretsController {
	return newDerivedController[pki.RootSecretSpec, pki.RootSecretExtension]("pki.RootSecretsController",
		[]controller.Input{configview.Input()},
		func(ctx context.Context, r controller.Reader, _ *zap.Logger) (map[resource.ID]pki.RootSecretSpec, bool, error) {
			doc, err := configview.Read(ctx, r)

			return rootSecrets(doc), err == nil, err
		})
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
