package config

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
	"github.com/siderolabs/protoenc"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// ViewNamespaceName is the namespace of the decoded machine config. It is not persisted, unlike
// NamespaceName: the view is derived again from the persisted config after a restart.
const ViewNamespaceName resource.Namespace = "configview"

// MachineConfigViewType is the type of the MachineConfigView resource.
const MachineConfigViewType = resource.Type("MachineConfigViews.configview.nodepki.dev")

// MachineConfigView is the typed view of the active machine config (ID ActiveID): the v1alpha1
// document decoded once per config change, which every controller that reads the config takes
// as its input instead of decoding the MachineConfig itself.
type MachineConfigView = typed.Resource[MachineConfigViewSpec, MachineConfigViewExtension]

// MachineConfigViewSpec holds the decoded document and the MachineConfig version it comes from.
type MachineConfigViewSpec struct {
	// ConfigVersion is the version of the MachineConfig resource the document was decoded from.
	ConfigVersion string `yaml:"configVersion" protobuf:"1"`
	// Document is the v1alpha1 document; its protobuf form is its YAML.
	Document *machineconfig.Document `yaml:"document" protobuf:"2"`
}

// NewMachineConfigView initializes a MachineConfigView resource.
func NewMachineConfigView(id resource.ID) *MachineConfigView {
	return typed.NewResource[MachineConfigViewSpec, MachineConfigViewExtension](
		resource.NewMetadata(ViewNamespaceName, MachineConfigViewType, id, resource.VersionUndefined),
		MachineConfigViewSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable: every read of the view from the state is a copy, so a
// reader may not change what the next one sees.
func (s MachineConfigViewSpec) DeepCopy() MachineConfigViewSpec {
	return MachineConfigViewSpec{ConfigVersion: s.ConfigVersion, Document: copyDocument(s.Document)}
}

// MachineConfigViewExtension provides auxiliary methods for MachineConfigView.
type MachineConfigViewExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (MachineConfigViewExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             MachineConfigViewType,
		DefaultNamespace: ViewNamespaceName,
		Sensitivity:      meta.Sensitive,
	}
}

func init() {
	protoenc.RegisterEncoderDecoder[*machineconfig.Document](
		func(doc *machineconfig.Document) ([]byte, error) { return yaml.Marshal(doc) },
		func(data []byte) (*machineconfig.Document, error) {
			var doc machineconfig.Document

			if err := yaml.Unmarshal(data, &doc); err != nil {
				return nil, err
			}

			return &doc, nil
		},
	)

	ensure.NoError(protobuf.RegisterDynamic[MachineConfigViewSpec](MachineConfigViewType, &MachineConfigView{}))
}

// copyDocument copies a document and everything it points to.
func copyDocument(in *machineconfig.Document) *machineconfig.Document {
	if in == nil {
		return nil
	}

	out := *in
	out.Machine = copyMachine(in.Machine)
	out.Cluster = copyCluster(in.Cluster)

	return &out
}

func copyMachine(in *machineconfig.MachineSection) *machineconfig.MachineSection {
	if in == nil {
		return nil
	}

	out := *in
	out.AcceptedTokens = slices.Clone(in.AcceptedTokens)
	out.CA = copyCertificateAndKey(in.CA)
	out.AcceptedCAs = copyCertificates(in.AcceptedCAs)
	out.CertSANs = slices.Clone(in.CertSANs)
	out.CertificateLifetimes = copyPointer(in.CertificateLifetimes)
	out.RevokedCertificates = slices.Clone(in.RevokedCertificates)

	return &out
}

func copyCluster(in *machineconfig.ClusterSection) *machineconfig.ClusterSection {
	if in == nil {
		return nil
	}

	out := *in
	out.ControlPlane = copyPointer(in.ControlPlane)

	if in.Network != nil {
		out.Network = &machineconfig.ClusterNetwork{
			DNSDomain:      in.Network.DNSDomain,
			PodSubnets:     slices.Clone(in.Network.PodSubnets),
			ServiceSubnets: slices.Clone(in.Network.ServiceSubnets),
		}
	}

	out.CA = copyCertificateAndKey(in.CA)
	out.AcceptedCAs = copyCertificates(in.AcceptedCAs)
	out.AggregatorCA = copyCertificateAndKey(in.AggregatorCA)
	out.AcceptedAggregatorCAs = copyCertificates(in.AcceptedAggregatorCAs)
	out.ServiceAccount = copyKey(in.ServiceAccount)

	if in.AcceptedServiceAccountKeys != nil {
		out.AcceptedServiceAccountKeys = make([]*machineconfig.Key, len(in.AcceptedServiceAccountKeys))
		for i, key := range in.AcceptedServiceAccountKeys {
			out.AcceptedServiceAccountKeys[i] = copyKey(key)
		}
	}

	if in.APIServer != nil {
		out.APIServer = &machineconfig.APIServer{CertSANs: slices.Clone(in.APIServer.CertSANs)}
	}

	if in.Etcd != nil {
		out.Etcd = &machineconfig.Etcd{CA: copyCertificateAndKey(in.Etcd.CA), AcceptedCAs: copyCertificates(in.Etcd.AcceptedCAs)}
	}

	out.AdminKubeconfig = copyPointer(in.AdminKubeconfig)

	return &out
}

func copyCertificateAndKey(in *machineconfig.CertificateAndKey) *machineconfig.CertificateAndKey {
	if in == nil {
		return nil
	}

	return &machineconfig.CertificateAndKey{Crt: slices.Clone(in.Crt), Key: slices.Clone(in.Key)}
}

func copyCertificates(in []*machineconfig.Certificate) []*machineconfig.Certificate {
	if in == nil {
		return nil
	}

	out := make([]*machineconfig.Certificate, len(in))

	for i, crt := range in {
		if crt != nil {
			out[i] = &machineconfig.Certificate{Crt: slices.Clone(crt.Crt)}
		}
	}

	return out
}

func copyKey(in *machineconfig.Key) *machineconfig.Key {
	if in == nil {
		return nil
	}

	return &machineconfig.Key{Key: slices.Clone(in.Key)}
}

// copyPointer copies a struct of values only.
func copyPointer[T any](in *T) *T {
	if in == nil {
		return nil
	}

	out := *in

	return &out
}
