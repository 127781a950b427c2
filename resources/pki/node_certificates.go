package pki

import (
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// NodeCertificatesType is the type of the NodeCertificates resource.
const NodeCertificatesType = resource.Type("NodeCertificates.pki.nodepki.dev")

// NodeCertificate is one leaf certificate of the node with its key and the CA bundle its consumer
// must trust, obtained for the CertificateRequest of the same ID (IDs: CertAPI, CertTrustd,
// CertEtcdServer, ...).
type NodeCertificate = typed.Resource[NodeCertificateSpec, NodeCertificateExtension]

// NodeCertificateSpec changes only when the certificate is reissued or the trust bundle changes.
type NodeCertificateSpec struct {
	// Root is the root ID whose CA issued the certificate.
	Root        string `yaml:"root" protobuf:"1"`
	Certificate string `yaml:"certificate" protobuf:"2"`
	Key         string `yaml:"key" protobuf:"3"`
	// CABundle is the PEM pool the certificate's consumer trusts (the root's AcceptedCAs).
	CABundle          string `yaml:"caBundle" protobuf:"4"`
	IssuerFingerprint string `yaml:"issuerFingerprint" protobuf:"5"`
	// Request is a digest of everything the certificate was issued for (profile, SANs, issuer);
	// a different digest means the certificate must be reissued.
	Request string `yaml:"request" protobuf:"6"`
	// RenewAt is when the certificate is due for renewal: 2/3 of its life minus jitter.
	RenewAt Time `yaml:"renewAt" protobuf:"7"`
	// LastError is why the latest attempt to obtain the certificate failed (empty once it succeeds);
	// Certificate and Key keep the previous certificate, if any, meanwhile.
	LastError string `yaml:"lastError,omitempty" protobuf:"8"`
}

// NewNodeCertificate initializes a NodeCertificate resource.
func NewNodeCertificate(id resource.ID) *NodeCertificate {
	return typed.NewResource[NodeCertificateSpec, NodeCertificateExtension](
		resource.NewMetadata(NamespaceName, NodeCertificatesType, id, resource.VersionUndefined),
		NodeCertificateSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s NodeCertificateSpec) DeepCopy() NodeCertificateSpec {
	return s
}

// NodeCertificateExtension provides auxiliary methods for NodeCertificate.
type NodeCertificateExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (NodeCertificateExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             NodeCertificatesType,
		DefaultNamespace: NamespaceName,
		Sensitivity:      meta.Sensitive,
		PrintColumns: []meta.PrintColumn{
			{Name: "Root", JSONPath: "{.root}"},
			{Name: "Renew-At", JSONPath: "{.renewAt}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[NodeCertificateSpec](NodeCertificatesType, &NodeCertificate{}))
}
