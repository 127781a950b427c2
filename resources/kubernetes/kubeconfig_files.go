package kubernetes

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// KubeconfigFilesType is the type of the KubeconfigFiles resource.
const KubeconfigFilesType = resource.Type("KubeconfigFiles.kubernetes.nodepki.dev")

// KubeconfigFiles records the kubeconfigs of the control-plane components a control plane last
// wrote under <state-dir>/secrets/kubernetes (ID KubeconfigFilesID): kube-controller-manager's,
// kube-scheduler's and the node's own admin.conf.
type KubeconfigFiles = typed.Resource[KubeconfigFilesSpec, KubeconfigFilesExtension]

// KubeconfigFilesSpec describes the files.
type KubeconfigFilesSpec struct {
	// Dir is the directory holding the files.
	Dir string `yaml:"dir" protobuf:"1"`
	// Server is the kube-apiserver every kubeconfig points at: the node's own.
	Server string `yaml:"server" protobuf:"2"`
	// CAFingerprints are the SPKI fingerprints of the CAs of their CA data (the accepted
	// Kubernetes CAs).
	CAFingerprints []string `yaml:"caFingerprints" protobuf:"3"`
	// Kubeconfigs are the files, ordered by name.
	Kubeconfigs []KubeconfigFile `yaml:"kubeconfigs" protobuf:"4"`
}

// KubeconfigFile is one kubeconfig and its client certificate.
type KubeconfigFile struct {
	Name string `yaml:"name" protobuf:"1"`
	// Digest is the hex SHA-256 of the file.
	Digest string `yaml:"digest" protobuf:"2"`
	// Subject is the client certificate's subject (the Kubernetes user and groups).
	Subject string `yaml:"subject" protobuf:"3"`
	// NotAfter and RenewAt are RFC 3339 UTC: the certificate's expiry and when it is reissued.
	NotAfter string `yaml:"notAfter" protobuf:"4"`
	RenewAt  string `yaml:"renewAt" protobuf:"5"`
}

// NewKubeconfigFiles initializes a KubeconfigFiles resource.
func NewKubeconfigFiles(id resource.ID) *KubeconfigFiles {
	return typed.NewResource[KubeconfigFilesSpec, KubeconfigFilesExtension](
		resource.NewMetadata(NamespaceName, KubeconfigFilesType, id, resource.VersionUndefined),
		KubeconfigFilesSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s KubeconfigFilesSpec) DeepCopy() KubeconfigFilesSpec {
	s.CAFingerprints = slices.Clone(s.CAFingerprints)
	s.Kubeconfigs = slices.Clone(s.Kubeconfigs)

	return s
}

// KubeconfigFilesExtension provides auxiliary methods for KubeconfigFiles.
type KubeconfigFilesExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (KubeconfigFilesExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             KubeconfigFilesType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "Dir", JSONPath: "{.dir}"},
			{Name: "Server", JSONPath: "{.server}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[KubeconfigFilesSpec](KubeconfigFilesType, &KubeconfigFiles{}))
}
