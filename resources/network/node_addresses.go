package network

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// NodeAddressesType is the type of the NodeAddresses resource.
const NodeAddressesType = resource.Type("NodeAddresses.network.nodepki.dev")

// CurrentID is the ID of the node's current addresses.
const CurrentID = resource.ID("current")

// NodeAddresses lists the addresses the node is reachable on.
type NodeAddresses = typed.Resource[NodeAddressesSpec, NodeAddressesExtension]

// NodeAddressesSpec is sorted and deduplicated, so it only changes when the addresses do.
type NodeAddressesSpec struct {
	Addresses []string `yaml:"addresses" protobuf:"1"`
}

// NewNodeAddresses initializes a NodeAddresses resource.
func NewNodeAddresses(id resource.ID) *NodeAddresses {
	return typed.NewResource[NodeAddressesSpec, NodeAddressesExtension](
		resource.NewMetadata(NamespaceName, NodeAddressesType, id, resource.VersionUndefined),
		NodeAddressesSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s NodeAddressesSpec) DeepCopy() NodeAddressesSpec {
	return NodeAddressesSpec{Addresses: slices.Clone(s.Addresses)}
}

// NodeAddressesExtension provides auxiliary methods for NodeAddresses.
type NodeAddressesExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (NodeAddressesExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             NodeAddressesType,
		DefaultNamespace: NamespaceName,
		PrintColumns:     []meta.PrintColumn{{Name: "Addresses", JSONPath: "{.addresses}"}},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[NodeAddressesSpec](NodeAddressesType, &NodeAddresses{}))
}
