package pki

import (
	"net/netip"
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// CertSANsType is the type of the CertSANs resource.
const CertSANsType = resource.Type("CertSANs.pki.nodepki.dev")

// CertSAN is a set of subject alternative names for one family of server certificates
// (IDs: SANsAPI, SANsKubernetes, SANsEtcd).
type CertSAN = typed.Resource[CertSANSpec, CertSANExtension]

// CertSANSpec lists are sorted and deduplicated.
type CertSANSpec struct {
	IPs      []netip.Addr `yaml:"ips" protobuf:"1"`
	DNSNames []string     `yaml:"dnsNames" protobuf:"2"`
}

// NewCertSAN initializes a CertSAN resource.
func NewCertSAN(id resource.ID) *CertSAN {
	return typed.NewResource[CertSANSpec, CertSANExtension](
		resource.NewMetadata(NamespaceName, CertSANsType, id, resource.VersionUndefined),
		CertSANSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s CertSANSpec) DeepCopy() CertSANSpec {
	return CertSANSpec{IPs: slices.Clone(s.IPs), DNSNames: slices.Clone(s.DNSNames)}
}

// CertSANExtension provides auxiliary methods for CertSAN.
type CertSANExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (CertSANExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             CertSANsType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "IPs", JSONPath: "{.ips}"},
			{Name: "DNS", JSONPath: "{.dnsNames}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[CertSANSpec](CertSANsType, &CertSAN{}))
}
