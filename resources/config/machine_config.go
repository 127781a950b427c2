package config

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
	"go.yaml.in/yaml/v4"
)

// MachineConfigType is the type of the MachineConfig resource.
const MachineConfigType = resource.Type("MachineConfigs.config.nodepki.dev")

// ActiveID is the ID of the machine config the node runs with (Talos's name for it).
const ActiveID = resource.ID("v1alpha1")

// MachineConfig is the node's machine config document.
type MachineConfig = typed.Resource[MachineConfigSpec, MachineConfigExtension]

// MachineConfigSpec carries the machine config document exactly as applied.
//
// The raw bytes are the source of truth so that fields nodepki does not know survive; the YAML
// form of the spec is the document itself, which is what `get machineconfig -o yaml` shows.
type MachineConfigSpec struct {
	Raw []byte `protobuf:"1"`
}

// NewMachineConfig initializes a MachineConfig resource.
func NewMachineConfig(id resource.ID) *MachineConfig {
	return typed.NewResource[MachineConfigSpec, MachineConfigExtension](
		resource.NewMetadata(NamespaceName, MachineConfigType, id, resource.VersionUndefined),
		MachineConfigSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s MachineConfigSpec) DeepCopy() MachineConfigSpec {
	return MachineConfigSpec{Raw: append([]byte(nil), s.Raw...)}
}

// MarshalYAML renders the spec as the config document.
func (s MachineConfigSpec) MarshalYAML() (any, error) {
	var doc yaml.Node

	if err := yaml.Unmarshal(s.Raw, &doc); err != nil {
		return nil, err
	}

	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		return doc.Content[0], nil
	}

	return &doc, nil
}

// UnmarshalYAML captures the document as raw bytes.
func (s *MachineConfigSpec) UnmarshalYAML(node *yaml.Node) error {
	raw, err := yaml.Marshal(node)
	if err != nil {
		return err
	}

	s.Raw = raw

	return nil
}

// MachineConfigExtension provides auxiliary methods for MachineConfig.
type MachineConfigExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (MachineConfigExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             MachineConfigType,
		DefaultNamespace: NamespaceName,
		Sensitivity:      meta.Sensitive,
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[MachineConfigSpec](MachineConfigType, &MachineConfig{}))
}
