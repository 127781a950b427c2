package machineconfig_test

import (
	"bytes"
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
	yamlv3 "gopkg.in/yaml.v3"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// metalMode is the validation mode of a node booted from disk, without requiring install settings.
type metalMode struct{}

func (metalMode) String() string        { return "metal" }
func (metalMode) RequiresInstall() bool { return false }
func (metalMode) InContainer() bool     { return false }

// talosConfigs are configs written by Talos's own generator (current version contract, with its
// documentation comments), as `talosctl gen config` writes them.
var talosConfigs = sync.OnceValues(func() (map[machine.Type][]byte, error) {
	bundle, err := secrets.NewBundle(secrets.NewFixedClock(time.Now()), talosconfig.TalosVersionCurrent)
	if err != nil {
		return nil, err
	}

	input, err := talosgenerate.NewInput("talos", "https://talos.test:6443", constants.DefaultKubernetesVersion,
		talosgenerate.WithSecretsBundle(bundle),
		talosgenerate.WithAdditionalSubjectAltNames([]string{"extra.test", "10.0.0.9"}),
		talosgenerate.WithInstallDisk("/dev/sda"),
	)
	if err != nil {
		return nil, err
	}

	out := map[machine.Type][]byte{}

	for _, typ := range []machine.Type{machine.TypeControlPlane, machine.TypeWorker} {
		cfg, err := input.Config(typ)
		if err != nil {
			return nil, err
		}

		if out[typ], err = cfg.Bytes(); err != nil {
			return nil, err
		}
	}

	return out, nil
})

func TestTalosConfigRoundTrip(t *testing.T) {
	t.Parallel()

	configs, err := talosConfigs()
	require.NoError(t, err)

	for typ, input := range configs {
		t.Run(typ.String(), func(t *testing.T) {
			t.Parallel()

			cfg := mustParse(t, input)
			require.NoError(t, cfg.Validate())
			assert.Equal(t, typ.IsControlPlane(), cfg.IsControlPlane())

			output := mustBytes(t, cfg)
			assert.Equal(t, decodeAll(t, input), decodeAll(t, output), "Parse -> Bytes lost or changed a field")

			talosValidates(t, output)
		})
	}
}

// TestTalosConfigPatchRoundTrip patches a Talos config with both kinds of patch and checks that
// every other field is kept and that Talos reads the result.
func TestTalosConfigPatchRoundTrip(t *testing.T) {
	t.Parallel()

	configs, err := talosConfigs()
	require.NoError(t, err)

	c := cluster(t)
	extraCA := b64(c.otherCA)

	patchTexts := []string{
		"machine:\n  acceptedCAs:\n    - crt: " + extraCA + "\n  certSANs: [added.test]\n",
		`[{"op": "add", "path": "/cluster/acceptedCAs", "value": [{"crt": "` + extraCA + `"}]}, {"op": "replace", "path": "/cluster/clusterName", "value": "renamed"}]`,
	}

	for typ, input := range configs {
		t.Run(typ.String(), func(t *testing.T) {
			t.Parallel()

			patches, err := machineconfig.LoadPatches(patchTexts)
			require.NoError(t, err)

			patched, err := machineconfig.Apply(mustParse(t, input), patches...)
			require.NoError(t, err)
			require.NoError(t, patched.Validate())

			output := mustBytes(t, patched)

			want := edit(t, input, func(d map[string]any) {
				m := section(d, "machine")
				m["acceptedCAs"] = []any{map[string]any{"crt": extraCA}}
				m["certSANs"] = append(m["certSANs"].([]any), "added.test")
				section(d, "cluster")["acceptedCAs"] = []any{map[string]any{"crt": extraCA}}
				section(d, "cluster")["clusterName"] = "renamed"
			})
			assert.Equal(t, decodeAll(t, want), decodeAll(t, output), "a field the patches did not name changed")

			talosCfg := talosValidates(t, output)
			assert.Len(t, talosCfg.Machine().Security().AcceptedCAs(), 1)
			assert.Len(t, talosCfg.Cluster().AcceptedCAs(), 1)
			assert.Equal(t, "renamed", talosCfg.Cluster().Name())
		})
	}
}

// talosValidates decodes data strictly into Talos's v1alpha1 types (an unknown or misspelled field
// is an error) and runs Talos's validation on it. Talos's own loader cannot be built in this module
// (it needs an older siderolabs/gen), and its types are written for gopkg.in/yaml.v3, hence that
// decoder here.
func talosValidates(t *testing.T, data []byte) *v1alpha1.Config {
	t.Helper()

	dec := yamlv3.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)

	var cfg v1alpha1.Config
	require.NoError(t, dec.Decode(&cfg))

	_, err := cfg.Validate(metalMode{})
	require.NoError(t, err)

	return &cfg
}

// TestTalosRefusesExtensions checks what docs/machine-config.md says of the nodepki extensions:
// Talos's strict decode refuses each one (it rejects unknown keys), and a config with none of
// them loads.
func TestTalosRefusesExtensions(t *testing.T) {
	t.Parallel()

	configs, err := talosConfigs()
	require.NoError(t, err)

	c := cluster(t)
	extraCA := []any{map[string]any{"crt": b64(c.otherCA)}}

	for _, tc := range []struct {
		field string
		add   func(doc map[string]any)
	}{
		{"machine.acceptedTokens", func(d map[string]any) { section(d, "machine")["acceptedTokens"] = []any{"abcdef.0123456789abcdef"} }},
		{"machine.certificateLifetimes", func(d map[string]any) {
			section(d, "machine")["certificateLifetimes"] = map[string]any{"api": "1h"}
		}},
		{"machine.revokedCertificates", func(d map[string]any) {
			section(d, "machine")["revokedCertificates"] = []any{map[string]any{"fingerprint": strings.Repeat("ab", 32)}}
		}},
		{"cluster.etcd.acceptedCAs", func(d map[string]any) { section(d, "cluster", "etcd")["acceptedCAs"] = extraCA }},
		{"cluster.acceptedAggregatorCAs", func(d map[string]any) { section(d, "cluster")["acceptedAggregatorCAs"] = extraCA }},
		{"cluster.acceptedServiceAccountKeys", func(d map[string]any) {
			section(d, "cluster")["acceptedServiceAccountKeys"] = []any{map[string]any{"key": b64(c.otherCA)}}
		}},
	} {
		t.Run(tc.field, func(t *testing.T) {
			t.Parallel()

			data := edit(t, configs[machine.TypeControlPlane], tc.add)

			dec := yamlv3.NewDecoder(bytes.NewReader(data))
			dec.KnownFields(true)

			var cfg v1alpha1.Config

			err := dec.Decode(&cfg)
			require.Error(t, err, "Talos loads a config with %s", tc.field)

			name := tc.field[strings.LastIndex(tc.field, ".")+1:]
			assert.Contains(t, err.Error(), "field "+name+" not found")
		})
	}
}
