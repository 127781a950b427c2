package pki

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// CAStatusesType is the type of the CAStatus resource.
const CAStatusesType = resource.Type("CAStatuses.pki.nodepki.dev")

// CA roles in a root's trust pool.
const (
	CARoleIssuing  = "issuing"  // the CA the root issues with now
	CARoleAccepted = "accepted" // trusted, but not issuing (machine.acceptedCAs and friends)
)

// CAStatus reports one CA certificate of a root's trust pool. Its ID is the root and the short
// fingerprint, "os-0123456789ab", so that the CAs of a root sort together and an ID never changes
// while the CA stays in the pool.
type CAStatus = typed.Resource[CAStatusSpec, CAStatusExtension]

// CAStatusSpec is what an operator needs to know about a CA. The service-account root has keys,
// not CAs, and has no CAStatus.
type CAStatusSpec struct {
	Root    string `yaml:"root" protobuf:"1"`
	Subject string `yaml:"subject" protobuf:"2"`
	// Fingerprint is the hex SHA-256 SPKI fingerprint, as in AcceptedCAs.
	Fingerprint string `yaml:"fingerprint" protobuf:"3"`
	// ShortFingerprint is the first 12 hex digits of Fingerprint, for tables.
	ShortFingerprint string `yaml:"shortFingerprint" protobuf:"4"`
	NotBefore        Time   `yaml:"notBefore" protobuf:"5"`
	NotAfter         Time   `yaml:"notAfter" protobuf:"6"`
	// Role is CARoleIssuing or CARoleAccepted.
	Role string `yaml:"role" protobuf:"7"`
}

// NewCAStatus initializes a CAStatus resource.
func NewCAStatus(id resource.ID) *CAStatus {
	return typed.NewResource[CAStatusSpec, CAStatusExtension](
		resource.NewMetadata(NamespaceName, CAStatusesType, id, resource.VersionUndefined),
		CAStatusSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s CAStatusSpec) DeepCopy() CAStatusSpec {
	return s
}

// CAStatusExtension provides auxiliary methods for CAStatus.
type CAStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (CAStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             CAStatusesType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "Root", JSONPath: "{.root}"},
			{Name: "Role", JSONPath: "{.role}"},
			{Name: "Fingerprint", JSONPath: "{.shortFingerprint}"},
			{Name: "Not-After", JSONPath: "{.notAfter}"},
			{Name: "Subject", JSONPath: "{.subject}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[CAStatusSpec](CAStatusesType, &CAStatus{}))
}
