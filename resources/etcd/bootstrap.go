package etcd

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// BootstrapType is the type of the Bootstrap resource.
const BootstrapType = resource.Type("Bootstraps.etcd.nodepki.dev")

// Bootstrap is the request, made through the node API, that this control plane forms a new etcd
// cluster of one member (ID BootstrapID). Without it a control plane only ever joins an existing
// cluster, so two control planes that start together cannot form two clusters.
type Bootstrap = typed.Resource[BootstrapSpec, BootstrapExtension]

// BootstrapSpec records when the request was made.
type BootstrapSpec struct {
	// RequestedAt is RFC 3339 UTC.
	RequestedAt string `yaml:"requestedAt" protobuf:"1"`
}

// NewBootstrap initializes a Bootstrap resource.
func NewBootstrap(id resource.ID) *Bootstrap {
	return typed.NewResource[BootstrapSpec, BootstrapExtension](
		resource.NewMetadata(NamespaceName, BootstrapType, id, resource.VersionUndefined),
		BootstrapSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s BootstrapSpec) DeepCopy() BootstrapSpec {
	return s
}

// BootstrapExtension provides auxiliary methods for Bootstrap.
type BootstrapExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (BootstrapExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             BootstrapType,
		DefaultNamespace: NamespaceName,
		PrintColumns:     []meta.PrintColumn{{Name: "Requested-At", JSONPath: "{.requestedAt}"}},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[BootstrapSpec](BootstrapType, &Bootstrap{}))
}
