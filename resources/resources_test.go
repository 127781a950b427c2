package resources_test

import (
	"strings"
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/resources"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/kubernetes"
	"github.com/nodepki/nodepki/resources/pki"
)

func TestRegisterAll(t *testing.T) {
	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(t.Context(), st))

	// Every type lives in a registered namespace, or the API refuses to serve it.
	for _, r := range resources.Definitions() {
		rd := r.ResourceDefinition()
		_, err := st.Get(t.Context(), resource.NewMetadata(meta.NamespaceName, meta.NamespaceType, rd.DefaultNamespace, resource.VersionUndefined))
		require.NoError(t, err, "%s: namespace %q is not registered", rd.Type, rd.DefaultNamespace)
	}

	members, err := safe.StateGet[*meta.ResourceDefinition](t.Context(), st,
		resource.NewMetadata(meta.NamespaceName, meta.ResourceDefinitionType, strings.ToLower(cluster.MemberType), resource.VersionUndefined))
	require.NoError(t, err)
	assert.Equal(t, meta.NonSensitive, members.TypedSpec().Sensitivity, "members are readable by os:reader")
	assert.Contains(t, members.TypedSpec().AllAliases, "members", "`get members` resolves")
}

func TestProtobufRoundTrip(t *testing.T) {
	mc := config.NewMachineConfig(config.ActiveID)
	mc.TypedSpec().Raw = []byte("version: v1alpha1\nmachine:\n    type: worker\n    unknownField: kept\n")

	status := pki.NewCertificateStatus(pki.CertAPI)
	status.TypedSpec().DNSNames = []string{"a", "b"}
	status.TypedSpec().Trusted = true

	member := cluster.NewMember("10.0.0.5")
	member.TypedSpec().Addresses = []string{"10.0.0.5", "2001:db8::5"}
	member.TypedSpec().Hostname = "worker-1"
	member.TypedSpec().MachineType = "worker"
	member.TypedSpec().LastSeen = "2025-01-02T03:04:05Z"

	files := kubernetes.NewAPIServerFiles(kubernetes.APIServerFilesID)
	files.TypedSpec().Dir = "/state/secrets/kubernetes"
	files.TypedSpec().Files = []kubernetes.FileDigest{{Name: "apiserver.crt", Digest: "ab"}, {Name: "ca.crt", Digest: "cd"}}
	files.TypedSpec().ClientCAFingerprints = []string{"ef"}

	for _, r := range []resource.Resource{mc, status, member, files} {
		p, err := protobuf.FromResource(r)
		require.NoError(t, err)

		m, err := p.Marshal()
		require.NoError(t, err)

		back, err := protobuf.Unmarshal(m)
		require.NoError(t, err)

		typed, err := protobuf.UnmarshalResource(back)
		require.NoError(t, err)
		require.True(t, resource.Equal(r, typed), "%s did not survive the round trip", r.Metadata().Type())
	}
}

func TestMachineConfigYAMLIsTheDocument(t *testing.T) {
	mc := config.NewMachineConfig(config.ActiveID)
	mc.TypedSpec().Raw = []byte("version: v1alpha1\nmachine:\n    type: worker\n")

	p, err := protobuf.FromResource(mc)
	require.NoError(t, err)

	m, err := p.Marshal()
	require.NoError(t, err)
	require.Contains(t, m.Spec.YamlSpec, "type: worker")
}
