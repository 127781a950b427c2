package pki

import (
	"net/netip"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// CertificateRequestsType is the type of the CertificateRequests resource.
const CertificateRequestsType = resource.Type("CertificateRequests.pki.nodepki.dev")

// How a certificate is obtained (CertificateRequestSpec.Issuer).
const (
	// IssuerLocal: signed on this node with the issuing key of its root (control planes).
	IssuerLocal = "local"
	// IssuerTrustd: a CSR sent to trustd on a control plane with the join token (a worker's api).
	IssuerTrustd = "trustd"
)

// Key usages and extended key usages, as CertificateRequestSpec spells them.
const (
	KeyUsageDigitalSignature = "digitalSignature"
	KeyUsageKeyEncipherment  = "keyEncipherment"
	ExtKeyUsageServerAuth    = "serverAuth"
	ExtKeyUsageClientAuth    = "clientAuth"
)

// CertificateRequest is one leaf certificate the node must hold, as derived from the machine
// config and the node's SANs (same IDs as NodeCertificates). It carries no key material.
type CertificateRequest = typed.Resource[CertificateRequestSpec, CertificateRequestExtension]

// CertificateRequestSpec is everything the certificate is issued for; a change reissues it.
type CertificateRequestSpec struct {
	// Root is the root whose CA issues the certificate.
	Root string `yaml:"root" protobuf:"1"`
	// Issuer is IssuerLocal or IssuerTrustd.
	Issuer       string       `yaml:"issuer" protobuf:"2"`
	CommonName   string       `yaml:"commonName" protobuf:"3"`
	Organization []string     `yaml:"organization,omitempty" protobuf:"4"`
	DNSNames     []string     `yaml:"dnsNames,omitempty" protobuf:"5"`
	IPAddresses  []netip.Addr `yaml:"ipAddresses,omitempty" protobuf:"6"`
	KeyUsage     []string     `yaml:"keyUsage" protobuf:"7"`
	ExtKeyUsage  []string     `yaml:"extKeyUsage" protobuf:"8"`
	// Lifetime is the certificate's lifetime (machine.certificateLifetimes).
	Lifetime time.Duration `yaml:"lifetime" protobuf:"9"`
	// TrustdEndpoints are where an IssuerTrustd request is sent, in order.
	TrustdEndpoints []string `yaml:"trustdEndpoints,omitempty" protobuf:"10"`
}

// NewCertificateRequest initializes a CertificateRequest resource.
func NewCertificateRequest(id resource.ID) *CertificateRequest {
	return typed.NewResource[CertificateRequestSpec, CertificateRequestExtension](
		resource.NewMetadata(NamespaceName, CertificateRequestsType, id, resource.VersionUndefined),
		CertificateRequestSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s CertificateRequestSpec) DeepCopy() CertificateRequestSpec {
	s.Organization = slices.Clone(s.Organization)
	s.DNSNames = slices.Clone(s.DNSNames)
	s.IPAddresses = slices.Clone(s.IPAddresses)
	s.KeyUsage = slices.Clone(s.KeyUsage)
	s.ExtKeyUsage = slices.Clone(s.ExtKeyUsage)
	s.TrustdEndpoints = slices.Clone(s.TrustdEndpoints)

	return s
}

// CertificateRequestExtension provides auxiliary methods for CertificateRequest.
type CertificateRequestExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (CertificateRequestExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             CertificateRequestsType,
		DefaultNamespace: NamespaceName,
		Aliases:          []resource.Type{"certrequest"},
		PrintColumns: []meta.PrintColumn{
			{Name: "Root", JSONPath: "{.root}"},
			{Name: "Issuer", JSONPath: "{.issuer}"},
			{Name: "Lifetime", JSONPath: "{.lifetime}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[CertificateRequestSpec](CertificateRequestsType, &CertificateRequest{}))
}
