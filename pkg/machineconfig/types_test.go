package machineconfig_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

func TestCertificateLifetimes(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name                  string
		yaml                  string
		api, etcd, kubernetes time.Duration
	}{
		{"absent", "{}", machineconfig.DefaultAPILifetime, machineconfig.DefaultEtcdLifetime, machineconfig.DefaultKubernetesLifetime},
		{"empty", "certificateLifetimes: {}", machineconfig.DefaultAPILifetime, machineconfig.DefaultEtcdLifetime, machineconfig.DefaultKubernetesLifetime},
		{"some", "certificateLifetimes: {etcd: 30s}", machineconfig.DefaultAPILifetime, 30 * time.Second, machineconfig.DefaultKubernetesLifetime},
		{"all", "certificateLifetimes: {api: 1h30m, etcd: 48h, kubernetes: 720h}", 90 * time.Minute, 48 * time.Hour, 720 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			var m machineconfig.MachineSection
			require.NoError(t, yaml.Unmarshal([]byte(tc.yaml), &m))

			assert.Equal(t, tc.api, m.CertificateLifetimes.APILifetime())
			assert.Equal(t, tc.etcd, m.CertificateLifetimes.EtcdLifetime())
			assert.Equal(t, tc.kubernetes, m.CertificateLifetimes.KubernetesLifetime())

			if m.CertificateLifetimes == nil {
				return
			}

			// Written back as Go durations, so a patch round trip keeps them readable.
			out, err := yaml.Marshal(m.CertificateLifetimes)
			require.NoError(t, err)

			var back machineconfig.CertificateLifetimes
			require.NoError(t, yaml.Unmarshal(out, &back))
			assert.Equal(t, *m.CertificateLifetimes, back)
			assert.NotContains(t, string(out), "000000", "durations are written as strings, not nanoseconds")
		})
	}
}

// FuzzDuration: any scalar either decodes into a Duration that is written back as a Go duration
// and decodes to the same value, or is refused; nothing panics.
func FuzzDuration(f *testing.F) {
	for _, seed := range []string{"30s", "24h", "1h30m", "-1s", "a day", "9999999999999h", "0"} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, s string) {
		raw, err := yaml.Marshal(map[string]string{"api": s})
		require.NoError(t, err)

		var l machineconfig.CertificateLifetimes
		if yaml.Unmarshal(raw, &l) != nil {
			return
		}

		out, err := yaml.Marshal(&l)
		require.NoError(t, err)

		var back machineconfig.CertificateLifetimes
		require.NoError(t, yaml.Unmarshal(out, &back))
		assert.Equal(t, l, back)
	})
}
