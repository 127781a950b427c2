package pki

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// RootSecretsType is the type of the RootSecrets resource.
const RootSecretsType = resource.Type("RootSecrets.pki.nodepki.dev")

// RootSecret is the issuing material of one root (IDs: RootOS, RootKubernetes, ...).
type RootSecret = typed.Resource[RootSecretSpec, RootSecretExtension]

// RootSecretSpec holds the issuing CA of a root as the machine config has it.
//
// IssuingKey is set only where this node may issue (control planes); for the service-account
// root IssuingKey is the signing key and IssuingCert is empty.
type RootSecretSpec struct {
	IssuingCert string `yaml:"issuingCert" protobuf:"1"`
	IssuingKey  string `yaml:"issuingKey" protobuf:"2"`
	// Tokens are the trustd join tokens (os root only): machine.token first, then accepted tokens.
	Tokens []string `yaml:"tokens,omitempty" protobuf:"3"`
}

// NewRootSecret initializes a RootSecret resource.
func NewRootSecret(id resource.ID) *RootSecret {
	return typed.NewResource[RootSecretSpec, RootSecretExtension](
		resource.NewMetadata(NamespaceName, RootSecretsType, id, resource.VersionUndefined),
		RootSecretSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s RootSecretSpec) DeepCopy() RootSecretSpec {
	s.Tokens = slices.Clone(s.Tokens)

	return s
}

// RootSecretExtension provides auxiliary methods for RootSecret.
type RootSecretExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (RootSecretExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             RootSecretsType,
		DefaultNamespace: NamespaceName,
		Sensitivity:      meta.Sensitive,
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[RootSecretSpec](RootSecretsType, &RootSecret{}))
}
