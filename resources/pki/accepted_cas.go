package pki

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// AcceptedCAsType is the type of the AcceptedCAs resource.
const AcceptedCAsType = resource.Type("AcceptedCAs.pki.nodepki.dev")

// AcceptedCA is the trust pool of one root (same IDs as RootSecrets).
type AcceptedCA = typed.Resource[AcceptedCASpec, AcceptedCAExtension]

// AcceptedCASpec is the verification pool of a root: the configured accepted CAs plus the issuing
// CA (last), deduplicated by fingerprint. For the service-account root it lists public keys instead.
type AcceptedCASpec struct {
	// Certificates are PEM CA certificates, in config order with the issuing CA last.
	Certificates []string `yaml:"certificates,omitempty" protobuf:"1"`
	// Fingerprints are the hex SHA-256 SPKI fingerprints of Certificates (or PublicKeys), same order.
	Fingerprints []string `yaml:"fingerprints" protobuf:"2"`
	// IssuingFingerprint identifies the CA (or key) this root currently issues with; empty if none.
	IssuingFingerprint string `yaml:"issuingFingerprint" protobuf:"3"`
	// PublicKeys are PEM public keys (service-account root only).
	PublicKeys []string `yaml:"publicKeys,omitempty" protobuf:"4"`
	// ShortFingerprints and IssuingShortFingerprint are Fingerprints and IssuingFingerprint cut to
	// ShortFingerprintLength hex digits, for tables.
	ShortFingerprints       []string `yaml:"shortFingerprints" protobuf:"5"`
	IssuingShortFingerprint string   `yaml:"issuingShortFingerprint" protobuf:"6"`
}

// NewAcceptedCA initializes an AcceptedCA resource.
func NewAcceptedCA(id resource.ID) *AcceptedCA {
	return typed.NewResource[AcceptedCASpec, AcceptedCAExtension](
		resource.NewMetadata(NamespaceName, AcceptedCAsType, id, resource.VersionUndefined),
		AcceptedCASpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s AcceptedCASpec) DeepCopy() AcceptedCASpec {
	s.Certificates = slices.Clone(s.Certificates)
	s.Fingerprints = slices.Clone(s.Fingerprints)
	s.PublicKeys = slices.Clone(s.PublicKeys)
	s.ShortFingerprints = slices.Clone(s.ShortFingerprints)

	return s
}

// AcceptedCAExtension provides auxiliary methods for AcceptedCA.
type AcceptedCAExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (AcceptedCAExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             AcceptedCAsType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "Issuing", JSONPath: "{.issuingShortFingerprint}"},
			{Name: "Accepted", JSONPath: "{.shortFingerprints}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[AcceptedCASpec](AcceptedCAsType, &AcceptedCA{}))
}
