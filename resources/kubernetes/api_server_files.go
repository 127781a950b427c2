package kubernetes

import (
	"slices"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/siderolabs/gen/ensure"
)

// APIServerFilesType is the type of the APIServerFiles resource.
const APIServerFilesType = resource.Type("APIServerFiles.kubernetes.nodepki.dev")

// APIServerFiles records what the control plane last wrote under <state-dir>/secrets/kubernetes
// for kube-apiserver (ID APIServerFilesID). The digests tell a supervisor which files changed, and
// so whether kube-apiserver picks the change up by itself or needs a restart.
type APIServerFiles = typed.Resource[APIServerFilesSpec, APIServerFilesExtension]

// APIServerFilesSpec describes the files; digests are hex SHA-256 of the files' contents.
type APIServerFilesSpec struct {
	// Dir is the directory holding the files.
	Dir string `yaml:"dir" protobuf:"1"`
	// Files are the files, ordered by name, with their digests.
	Files []FileDigest `yaml:"files" protobuf:"2"`
	// ClientCAFingerprints, RequestHeaderCAFingerprints and EtcdCAFingerprints are the SPKI
	// fingerprints of the CAs of each bundle, in file order.
	ClientCAFingerprints        []string `yaml:"clientCAFingerprints" protobuf:"3"`
	RequestHeaderCAFingerprints []string `yaml:"requestHeaderCAFingerprints" protobuf:"4"`
	EtcdCAFingerprints          []string `yaml:"etcdCAFingerprints" protobuf:"5"`
	// ServiceAccountKeyFingerprints are the fingerprints of the accepted service-account public
	// keys; ServiceAccountSigningFingerprint is the signing key's.
	ServiceAccountKeyFingerprints    []string `yaml:"serviceAccountKeyFingerprints" protobuf:"6"`
	ServiceAccountSigningFingerprint string   `yaml:"serviceAccountSigningFingerprint" protobuf:"7"`
	// StartupDigest is a digest of the files kube-apiserver reads only when it starts
	// (pkg/kubernetes StartupFiles): when it changes, a running kube-apiserver must be restarted.
	StartupDigest string `yaml:"startupDigest" protobuf:"8"`
}

// FileDigest is one file and the digest of its contents.
type FileDigest struct {
	Name   string `yaml:"name" protobuf:"1"`
	Digest string `yaml:"digest" protobuf:"2"`
}

// NewAPIServerFiles initializes an APIServerFiles resource.
func NewAPIServerFiles(id resource.ID) *APIServerFiles {
	return typed.NewResource[APIServerFilesSpec, APIServerFilesExtension](
		resource.NewMetadata(NamespaceName, APIServerFilesType, id, resource.VersionUndefined),
		APIServerFilesSpec{},
	)
}

// DeepCopy implements typed.DeepCopyable.
func (s APIServerFilesSpec) DeepCopy() APIServerFilesSpec {
	s.Files = slices.Clone(s.Files)
	s.ClientCAFingerprints = slices.Clone(s.ClientCAFingerprints)
	s.RequestHeaderCAFingerprints = slices.Clone(s.RequestHeaderCAFingerprints)
	s.EtcdCAFingerprints = slices.Clone(s.EtcdCAFingerprints)
	s.ServiceAccountKeyFingerprints = slices.Clone(s.ServiceAccountKeyFingerprints)

	return s
}

// Digest is the digest of the named file, "" if the spec has none.
func (s *APIServerFilesSpec) Digest(name string) string {
	if i := slices.IndexFunc(s.Files, func(f FileDigest) bool { return f.Name == name }); i >= 0 {
		return s.Files[i].Digest
	}

	return ""
}

// APIServerFilesExtension provides auxiliary methods for APIServerFiles.
type APIServerFilesExtension struct{}

// ResourceDefinition implements meta.ResourceDefinitionProvider.
func (APIServerFilesExtension) ResourceDefinition() meta.ResourceDefinitionSpec {
	return meta.ResourceDefinitionSpec{
		Type:             APIServerFilesType,
		DefaultNamespace: NamespaceName,
		PrintColumns: []meta.PrintColumn{
			{Name: "Dir", JSONPath: "{.dir}"},
			{Name: "Client-CAs", JSONPath: "{.clientCAFingerprints}"},
		},
	}
}

func init() {
	ensure.NoError(protobuf.RegisterDynamic[APIServerFilesSpec](APIServerFilesType, &APIServerFiles{}))
}
