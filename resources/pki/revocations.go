package pki

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"

	"github.com/nodepki/nodepki/pkg/revocation"
)

// RevocationsType is the type of the Revocations resource.
const RevocationsType = resource.Type("Revocations.pki.nodepki.dev")

// RevocationsID is the ID of the only Revocations resource.
const RevocationsID = resource.ID("client")

// Revocations lists the client credentials the node API refuses (machine.revokedCertificates).
type Revocations = typed.Resource[RevocationsSpec, RevocationsExtension]

// RevocationsSpec is machine.revokedCertificates as the node enforces it.
type RevocationsSpec struct {
	Entries []revocation.Entry `yaml:"entries" protobuf:"1"`
}

// NewRevocations initializes a Revocations resource.
func NewRevocations(id resource.ID) *Revocations {
	return typed.NewResource[RevocationsSpec, RevocationsExtension](
		resource.NewMetadata(NamespaceName, RevocationsType, id, resource.VersionUndefined),
		RevocationsSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s RevocationsSpec) DeepCopy() RevocationsSpec {
	s.Entries = slices.Clone(s.Entries)

	return s
}

// RevocationsExtension provides auxiliary methods for Revocations.
type RevocationsExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (RevocationsExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             RevocationsType,
		DefaultNamespace: NamespaceName,
		Aliases:          []resource.Type{"revocations", "revocation"},
		PrintColumns: []meta.PrintColumn{
			{Name: "Fingerprints", JSONPath: "{.entries[*].fingerprint}"},
			{Name: "Serials", JSONPath: "{.entries[*].serial}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[RevocationsSpec](RevocationsType, &Revocations{}))
}
