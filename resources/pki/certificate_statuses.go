package pki

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// CertificateStatusesType is the type of the CertificateStatuses resource.
const CertificateStatusesType = resource.Type("CertificateStatuses.pki.nodepki.dev")

// Certificate states, from best to worst.
const (
	StateValid     = "valid"     // trusted and before its renewal time
	StateRenewing  = "renewing"  // past its renewal time, a new one is being issued
	StateExpiring  = "expiring"  // within 10% of its lifetime of NotAfter and not yet renewed
	StateExpired   = "expired"   // past NotAfter (or not yet valid)
	StateUntrusted = "untrusted" // does not chain to a currently accepted CA
	StatePending   = "pending"   // not issued yet (see LastError)
	// StateRenewalFailing: trusted and not expiring yet, but the latest attempt to renew or reissue
	// it failed (see LastError); it stays in use meanwhile.
	StateRenewalFailing = "renewal-failing"
)

// CertificateStatus reports one NodeCertificate without its key (same IDs).
type CertificateStatus = typed.Resource[CertificateStatusSpec, CertificateStatusExtension]

// CertificateStatusSpec is what an operator needs to judge a certificate. Times are RFC 3339 UTC
// in YAML; IPAddresses are rendered from the parsed certificate.
type CertificateStatusSpec struct {
	Root              string   `yaml:"root" protobuf:"1"`
	Subject           string   `yaml:"subject" protobuf:"2"`
	DNSNames          []string `yaml:"dnsNames,omitempty" protobuf:"3"`
	IPAddresses       []string `yaml:"ipAddresses,omitempty" protobuf:"4"`
	Serial            string   `yaml:"serial" protobuf:"5"`
	Issuer            string   `yaml:"issuer" protobuf:"6"`
	IssuerFingerprint string   `yaml:"issuerFingerprint" protobuf:"7"`
	NotBefore         Time     `yaml:"notBefore" protobuf:"8"`
	NotAfter          Time     `yaml:"notAfter" protobuf:"9"`
	RenewAt           Time     `yaml:"renewAt" protobuf:"10"`
	// Trusted is true when the certificate chains to a CA in the root's current AcceptedCAs.
	Trusted   bool   `yaml:"trusted" protobuf:"11"`
	State     string `yaml:"state" protobuf:"12"`
	LastError string `yaml:"lastError,omitempty" protobuf:"13"`
	// IssuerShortFingerprint is IssuerFingerprint cut to ShortFingerprintLength hex digits, for tables.
	IssuerShortFingerprint string `yaml:"issuerShortFingerprint" protobuf:"14"`
}

// NewCertificateStatus initializes a CertificateStatus resource.
func NewCertificateStatus(id resource.ID) *CertificateStatus {
	return typed.NewResource[CertificateStatusSpec, CertificateStatusExtension](
		resource.NewMetadata(NamespaceName, CertificateStatusesType, id, resource.VersionUndefined),
		CertificateStatusSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s CertificateStatusSpec) DeepCopy() CertificateStatusSpec {
	s.DNSNames = slices.Clone(s.DNSNames)
	s.IPAddresses = slices.Clone(s.IPAddresses)

	return s
}

// CertificateStatusExtension provides auxiliary methods for CertificateStatus.
type CertificateStatusExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (CertificateStatusExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             CertificateStatusesType,
		DefaultNamespace: NamespaceName,
		Aliases:          []resource.Type{"certstatus"},
		PrintColumns: []meta.PrintColumn{
			{Name: "Issuer", JSONPath: "{.issuerShortFingerprint}"},
			{Name: "Not-After", JSONPath: "{.notAfter}"},
			{Name: "Renew-At", JSONPath: "{.renewAt}"},
			{Name: "State", JSONPath: "{.state}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[CertificateStatusSpec](CertificateStatusesType, &CertificateStatus{}))
}
