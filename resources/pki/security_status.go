package pki

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// SecurityStatusType is the type of the SecurityStatus resource.
const SecurityStatusType = resource.Type("SecurityStatuses.pki.nodepki.dev")

// SecurityStatusID is the ID of the node's only SecurityStatus.
const SecurityStatusID = resource.ID("securitystatus")

// SecurityStatus sums up the PKI posture of the node, one per node. It holds no secrets: os:reader
// reads it, so monitoring needs no admin credential.
type SecurityStatus = typed.Resource[SecurityStatusSpec, SecurityStatusExtension]

// SecurityStatusSpec is the node's PKI posture at a glance; CertificateStatuses and CAStatuses
// have the details.
type SecurityStatusSpec struct {
	// CAKeys are the roots whose CA (or signing) key this node holds, in AllRoots order: every root
	// on a control plane, none on a worker.
	CAKeys []string `yaml:"caKeys" protobuf:"1"`
	// Leaves is the number of the node's leaf certificates.
	Leaves int `yaml:"leaves" protobuf:"2"`
	// LeavesTrusted is true when every leaf is issued and chains to a CA its root accepts now.
	LeavesTrusted bool `yaml:"leavesTrusted" protobuf:"3"`
	// LeavesUnexpired is true when every leaf is issued and none is in the expired state (a leaf
	// that is untrusted reports that state first, and LeavesTrusted is false then).
	LeavesUnexpired bool `yaml:"leavesUnexpired" protobuf:"4"`
	// Problems names each leaf that is not in the valid or renewing state, as "id: state", in ID
	// order; empty when all is well.
	Problems []string `yaml:"problems,omitempty" protobuf:"5"`
	// EarliestExpiry is the earliest NotAfter of every leaf and every accepted CA, and
	// EarliestExpiryOf says which: "certificate/<id>" or "ca/<CAStatus id>".
	EarliestExpiry   Time   `yaml:"earliestExpiry" protobuf:"6"`
	EarliestExpiryOf string `yaml:"earliestExpiryOf" protobuf:"7"`
	// APITLSVersions are the TLS versions the node API accepts ("TLS 1.3").
	APITLSVersions []string `yaml:"apiTLSVersions" protobuf:"8"`
	// RevocationListVersion is the version of the certificate revocation list the node enforces;
	// 0 while nodepki has no revocation list (machine.revokedCertificates is not implemented yet).
	RevocationListVersion uint64 `yaml:"revocationListVersion" protobuf:"9"`
}

// NewSecurityStatus initializes a SecurityStatus resource.
func NewSecurityStatus() *SecurityStatus {
	return typed.NewResource[SecurityStatusSpec, SecurityStatusExtension](
		resource.NewMetadata(NamespaceName, SecurityStatusType, SecurityStatusID, resource.VersionUndefined),
		SecurityStatusSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s SecurityStatusSpec) DeepCopy() SecurityStatusSpec {
	s.CAKeys = slices.Clone(s.CAKeys)
	s.Problems = slices.Clone(s.Problems)
	s.APITLSVersions = slices.Clone(s.APITLSVersions)

	return s
}

// SecurityStatusExtension provides auxiliary methods for SecurityStatus.
type SecurityStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (SecurityStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             SecurityStatusType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "Trusted", JSONPath: "{.leavesTrusted}"},
			{Name: "Unexpired", JSONPath: "{.leavesUnexpired}"},
			{Name: "Earliest-Expiry", JSONPath: "{.earliestExpiry}"},
			{Name: "Of", JSONPath: "{.earliestExpiryOf}"},
			{Name: "CA-Keys", JSONPath: "{.caKeys}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[SecurityStatusSpec](SecurityStatusType, &SecurityStatus{}))
}
