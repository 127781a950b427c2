package etcd

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// PKIFilesType is the type of the PKIFiles resource.
const PKIFilesType = resource.Type("PKIFiles.etcd.nodepki.dev")

// PKIFiles records what the control plane last wrote under <state-dir>/secrets/etcd (ID PKIFilesID).
//
// The digests tell a supervisor what changed: etcd reloads its key pairs on every new connection
// but reads its CA file only at start, so a new TrustBundleDigest needs a restart of the member and
// a new key pair digest does not.
type PKIFiles = typed.Resource[PKIFilesSpec, PKIFilesExtension]

// PKIFilesSpec describes the files; digests are hex SHA-256 of the files' contents.
type PKIFilesSpec struct {
	// Dir is the directory holding the files.
	Dir string `yaml:"dir" protobuf:"1"`
	// TrustBundleDigest is the digest of ca.crt.
	TrustBundleDigest string `yaml:"trustBundleDigest" protobuf:"2"`
	// TrustedFingerprints are the SPKI fingerprints of the CAs in ca.crt, in file order.
	TrustedFingerprints []string `yaml:"trustedFingerprints" protobuf:"3"`
	// IssuerFingerprint is the SPKI fingerprint of the CA that issued the key pairs.
	IssuerFingerprint string `yaml:"issuerFingerprint" protobuf:"4"`
	// ServerDigest, PeerDigest and AdminDigest are digests of each certificate and its key together.
	ServerDigest string `yaml:"serverDigest" protobuf:"5"`
	PeerDigest   string `yaml:"peerDigest" protobuf:"6"`
	AdminDigest  string `yaml:"adminDigest" protobuf:"7"`
}

// NewPKIFiles initializes a PKIFiles resource.
func NewPKIFiles(id resource.ID) *PKIFiles {
	return typed.NewResource[PKIFilesSpec, PKIFilesExtension](
		resource.NewMetadata(NamespaceName, PKIFilesType, id, resource.VersionUndefined),
		PKIFilesSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s PKIFilesSpec) DeepCopy() PKIFilesSpec {
	s.TrustedFingerprints = slices.Clone(s.TrustedFingerprints)

	return s
}

// PKIFilesExtension provides auxiliary methods for PKIFiles.
type PKIFilesExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (PKIFilesExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             PKIFilesType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "Dir", JSONPath: "{.dir}"},
			{Name: "Trust-Bundle", JSONPath: "{.trustBundleDigest}"},
			{Name: "Issuer", JSONPath: "{.issuerFingerprint}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[PKIFilesSpec](PKIFilesType, &PKIFiles{}))
}
