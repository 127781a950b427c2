package resources_test

import (
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/resources"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/pki"
)

func TestRegisterAll(t *testing.T) {
	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(t.Context(), st))
}

func TestProtobufRoundTrip(t *testing.T) {
	mc := config.NewMachineConfig(config.ActiveID)
	mc.TypedSpec().Raw = []byte("version: v1alpha1\nmachine:\n    type: worker\n    unknownField: kept\n")

	status := pki.NewCertificateStatus(pki.CertAPI)
	status.TypedSpec().DNSNames = []string{"a", "b"}
	status.TypedSpec().Trusted = true

	for _, r := range []resource.Resource{mc, status} {
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
