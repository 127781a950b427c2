package generate_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	talosconfig "github.com/siderolabs/talos/pkg/machinery/config"
	talosgenerate "github.com/siderolabs/talos/pkg/machinery/config/generate"
	"github.com/siderolabs/talos/pkg/machinery/config/generate/secrets"
	"github.com/siderolabs/talos/pkg/machinery/config/machine"
	"github.com/siderolabs/talos/pkg/machinery/config/types/v1alpha1"
	"github.com/siderolabs/talos/pkg/machinery/constants"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v4"
	yamlv3 "gopkg.in/yaml.v3"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
)

const (
	clusterName = "compat"
	endpoint    = "https://cp.compat.test:6443"
)

var extraSANs = []string{"extra.compat.test", "10.0.0.9"}

// talosPair is one secrets bundle, and the configs Talos's generator makes from it.
type talosPair struct {
	bundle  *bundle.Bundle
	configs map[machine.Type]map[string]any
}

var sharedTalos = sync.OnceValues(func() (*talosPair, error) {
	talosBundle, err := secrets.NewBundle(secrets.NewFixedClock(time.Now()), talosconfig.TalosVersionCurrent)
	if err != nil {
		return nil, err
	}

	// secrets.yaml as talosctl writes it, read back with nodepki's loader.
	secretsYAML, err := yaml.Marshal(talosBundle)
	if err != nil {
		return nil, err
	}

	b, err := bundle.Parse(secretsYAML)
	if err != nil {
		return nil, err
	}

	input, err := talosgenerate.NewInput(clusterName, endpoint, constants.DefaultKubernetesVersion,
		talosgenerate.WithSecretsBundle(talosBundle),
		talosgenerate.WithAdditionalSubjectAltNames(extraSANs),
	)
	if err != nil {
		return nil, err
	}

	pair := &talosPair{bundle: b, configs: map[machine.Type]map[string]any{}}

	for _, typ := range []machine.Type{machine.TypeControlPlane, machine.TypeWorker} {
		cfg, err := input.Config(typ)
		if err != nil {
			return nil, err
		}

		data, err := cfg.Bytes()
		if err != nil {
			return nil, err
		}

		var doc map[string]any
		if err := yaml.Unmarshal(data, &doc); err != nil {
			return nil, err
		}

		pair.configs[typ] = doc
	}

	return pair, nil
})

// TestGenerateMatchesTalos generates configs from the same bundle as Talos's generator and checks
// that every field nodepki writes is a field Talos writes, with the same value.
func TestGenerateMatchesTalos(t *testing.T) {
	t.Parallel()

	pair, err := sharedTalos()
	require.NoError(t, err)

	controlPlane, worker, err := generate.Generate(generate.Input{
		ClusterName: clusterName, Endpoint: endpoint, Bundle: pair.bundle, AdditionalSANs: extraSANs,
	})
	require.NoError(t, err)

	for typ, cfg := range map[machine.Type]*machineconfig.Config{machine.TypeControlPlane: controlPlane, machine.TypeWorker: worker} {
		t.Run(typ.String(), func(t *testing.T) {
			t.Parallel()

			require.NoError(t, cfg.Validate())

			data, err := cfg.Bytes()
			require.NoError(t, err)

			talosAccepts(t, data)

			var ours map[string]any
			require.NoError(t, yaml.Unmarshal(data, &ours))

			theirs := pair.configs[typ]
			ourLeaves := leaves(ours, "")
			require.Greater(t, len(ourLeaves), 15)

			for path, value := range ourLeaves {
				assert.Equal(t, value, leaves(theirs, "")[path], "field %s differs from Talos's", path)
			}
		})
	}
}

func TestGenerateContents(t *testing.T) {
	t.Parallel()

	b, err := bundle.Generate()
	require.NoError(t, err)

	controlPlane, worker, err := generate.Generate(generate.Input{
		ClusterName: "demo", Endpoint: "https://[fd00::1]:6443", Bundle: b, AdditionalSANs: []string{"api.demo.test"},
	})
	require.NoError(t, err)

	cp := controlPlane.Document()
	assert.True(t, controlPlane.IsControlPlane())
	assert.Equal(t, machineconfig.TypeControlPlane, cp.Machine.Type)
	assert.Equal(t, b.TrustdInfo.Token, cp.Machine.Token)
	assert.Equal(t, b.Certs.OS, cp.Machine.CA)
	assert.Equal(t, []string{"api.demo.test"}, cp.Machine.CertSANs)
	assert.Equal(t, b.Cluster.ID, cp.Cluster.ID)
	assert.Equal(t, b.Cluster.Secret, cp.Cluster.Secret)
	assert.Equal(t, b.Secrets.BootstrapToken, cp.Cluster.Token)
	assert.Equal(t, b.Secrets.SecretboxEncryptionSecret, cp.Cluster.SecretboxEncryptionSecret)
	assert.Equal(t, b.Certs.K8s, cp.Cluster.CA)
	assert.Equal(t, b.Certs.K8sAggregator, cp.Cluster.AggregatorCA)
	assert.Equal(t, b.Certs.K8sServiceAccount, cp.Cluster.ServiceAccount)
	assert.Equal(t, b.Certs.Etcd, cp.Cluster.Etcd.CA)
	assert.Equal(t, "https://[fd00::1]:6443", cp.Cluster.ControlPlane.Endpoint)

	w := worker.Document()
	assert.False(t, worker.IsControlPlane())
	assert.Equal(t, machineconfig.TypeWorker, w.Machine.Type)
	assert.Equal(t, b.TrustdInfo.Token, w.Machine.Token)
	assert.Equal(t, string(b.Certs.OS.Crt), string(w.Machine.CA.Crt))
	assert.Empty(t, w.Machine.CA.Key)
	assert.Equal(t, string(b.Certs.K8s.Crt), string(w.Cluster.CA.Crt))
	assert.Empty(t, w.Cluster.CA.Key)
	assert.Nil(t, w.Cluster.AggregatorCA)
	assert.Nil(t, w.Cluster.ServiceAccount)
	assert.Nil(t, w.Cluster.Etcd)
	assert.Empty(t, w.Cluster.SecretboxEncryptionSecret)

	// Fields outside the typed view: layout and network defaults (IPv6 for an IPv6 endpoint).
	cpData, err := controlPlane.Bytes()
	require.NoError(t, err)

	assert.True(t, strings.HasPrefix(string(cpData), "version: v1alpha1\ndebug: false\npersist: true\nmachine:\n    type: controlplane\n"), string(cpData))
	assert.Contains(t, string(cpData), "    network:\n        dnsDomain: cluster.local\n        podSubnets:\n            - fc00:db8:10::/56\n        serviceSubnets:\n            - fc00:db8:20::/112\n")
	assert.Contains(t, string(cpData), "    apiServer:\n        certSANs:\n            - fd00::1\n            - api.demo.test\n")

	workerData, err := worker.Bytes()
	require.NoError(t, err)
	assert.Contains(t, string(workerData), "    ca:\n        crt: "+b64(b.Certs.OS.Crt)+"\n        key: \"\"\n")
}

func TestGenerateRefusesBadInput(t *testing.T) {
	t.Parallel()

	b, err := bundle.Generate()
	require.NoError(t, err)

	mismatched := *b
	mismatchedCerts := *b.Certs
	mismatchedCerts.OS = &machineconfig.CertificateAndKey{Crt: b.Certs.OS.Crt, Key: b.Certs.K8s.Key}
	mismatched.Certs = &mismatchedCerts

	noCerts := *b
	noCerts.Certs = nil

	tests := []struct {
		name    string
		in      generate.Input
		wantErr []string
	}{
		{"empty cluster name", generate.Input{Endpoint: endpoint, Bundle: b}, []string{"cluster name is empty"}},
		{"endpoint without scheme", generate.Input{ClusterName: "x", Endpoint: "cp.test:6443", Bundle: b}, []string{`endpoint "cp.test:6443" is not an https URL`}},
		{"http endpoint", generate.Input{ClusterName: "x", Endpoint: "http://cp.test:6443", Bundle: b}, []string{"not an https URL"}},
		{"no bundle", generate.Input{ClusterName: "x", Endpoint: endpoint}, []string{"no secrets bundle"}},
		{"bundle without certs", generate.Input{ClusterName: "x", Endpoint: endpoint, Bundle: &noCerts}, []string{"certs.os is missing", "certs.etcd is missing"}},
		{"OS key of another CA", generate.Input{ClusterName: "x", Endpoint: endpoint, Bundle: &mismatched}, []string{"control-plane config", "machine.ca.key", "does not match"}},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cp, w, err := generate.Generate(tc.in)
			require.Error(t, err)
			assert.Nil(t, cp)
			assert.Nil(t, w)

			for _, want := range tc.wantErr {
				assert.Contains(t, err.Error(), want)
			}
		})
	}
}

// leaves flattens a decoded document into path -> value; lists are leaves.
func leaves(v any, path string) map[string]any {
	out := map[string]any{}

	m, ok := v.(map[string]any)
	if !ok {
		out[path] = v

		return out
	}

	for k, child := range m {
		for p, leaf := range leaves(child, path+"."+k) {
			out[p] = leaf
		}
	}

	return out
}

// talosAccepts decodes data strictly into Talos's v1alpha1 types (a misspelled field is an error)
// and runs Talos's validation. Talos's types are written for gopkg.in/yaml.v3, hence that decoder.
func talosAccepts(t *testing.T, data []byte) {
	t.Helper()

	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)

	var cfg v1alpha1.Config
	require.NoError(t, dec.Decode(&cfg))

	_, err := cfg.Validate(metalMode{})
	require.NoError(t, err)
}

type metalMode struct{}

func (metalMode) String() string        { return "metal" }
func (metalMode) RequiresInstall() bool { return false }
func (metalMode) InContainer() bool     { return false }

func b64(data []byte) string {
	return base64.StdEncoding.EncodeToString(data)
}
