package config_test

import (
	"reflect"
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/protobuf"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/config"
)

// fill sets every field reachable from v to a non-zero value, so that a field DeepCopy leaves out
// (a new one) makes the copy differ or share memory.
func fill(t *testing.T, v reflect.Value) {
	t.Helper()

	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(t, v.Elem())
	case reflect.Struct:
		for i := range v.NumField() {
			fill(t, v.Field(i))
		}
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 2, 2))

		for i := range v.Len() {
			fill(t, v.Index(i))
		}
	case reflect.String:
		v.SetString("x")
	case reflect.Uint8:
		v.SetUint(7)
	case reflect.Int64:
		v.SetInt(42)
	default:
		t.Fatalf("fill: unhandled kind %s (%s): teach fill and DeepCopy about it", v.Kind(), v.Type())
	}
}

// assertNoSharing fails where the copy points to the same memory as the original.
func assertNoSharing(t *testing.T, path string, a, b reflect.Value) {
	t.Helper()

	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() {
			return
		}

		assert.NotEqual(t, a.Pointer(), b.Pointer(), "%s is shared", path)
		assertNoSharing(t, path, a.Elem(), b.Elem())
	case reflect.Struct:
		for i := range a.NumField() {
			assertNoSharing(t, path+"."+a.Type().Field(i).Name, a.Field(i), b.Field(i))
		}
	case reflect.Slice:
		if a.Len() == 0 {
			return
		}

		assert.NotEqual(t, a.Pointer(), b.Pointer(), "%s is shared", path)

		for i := range a.Len() {
			assertNoSharing(t, path+"[]", a.Index(i), b.Index(i))
		}
	default:
	}
}

func TestMachineConfigViewDeepCopy(t *testing.T) {
	t.Parallel()

	var doc machineconfig.Document

	fill(t, reflect.ValueOf(&doc).Elem())

	spec := config.MachineConfigViewSpec{ConfigVersion: "3", Document: &doc}
	copied := spec.DeepCopy()

	require.Equal(t, spec, copied)
	assertNoSharing(t, "Document", reflect.ValueOf(spec.Document), reflect.ValueOf(copied.Document))

	assert.Equal(t, config.MachineConfigViewSpec{}, config.MachineConfigViewSpec{}.DeepCopy())
}

func TestMachineConfigViewProtobufRoundTrip(t *testing.T) {
	t.Parallel()

	view := config.NewMachineConfigView(config.ActiveID)
	view.TypedSpec().ConfigVersion = "2"
	view.TypedSpec().Document = &machineconfig.Document{
		Version: "v1alpha1",
		Machine: &machineconfig.MachineSection{
			Type:                 machineconfig.TypeControlPlane,
			CA:                   &machineconfig.CertificateAndKey{Crt: []byte("-----BEGIN CERTIFICATE-----\n"), Key: []byte("key")},
			CertSANs:             []string{"a.example.test"},
			CertificateLifetimes: &machineconfig.CertificateLifetimes{Etcd: machineconfig.Duration(machineconfig.MinCertificateLifetime)},
		},
		Cluster: &machineconfig.ClusterSection{
			ClusterName: "test",
			Network:     &machineconfig.ClusterNetwork{DNSDomain: "corp.example", ServiceSubnets: []string{"10.100.0.0/16"}},
		},
	}

	p, err := protobuf.FromResource(view)
	require.NoError(t, err)

	m, err := p.Marshal()
	require.NoError(t, err)
	assert.Contains(t, m.Spec.YamlSpec, "dnsDomain: corp.example", "`get -o yaml` shows the typed view")

	back, err := protobuf.Unmarshal(m)
	require.NoError(t, err)

	typed, err := protobuf.UnmarshalResource(back)
	require.NoError(t, err)
	require.True(t, resource.Equal(view, typed), "the view did not survive the round trip")
}
