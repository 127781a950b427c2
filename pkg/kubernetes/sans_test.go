package kubernetes_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

func TestAPIServerSANs(t *testing.T) {
	t.Parallel()

	baseDNS := []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}

	for _, tc := range []struct {
		name      string
		cluster   *machineconfig.ClusterSection
		addresses []string
		hostname  string
		wantDNS   []string
		wantIPs   []string
		wantErr   []string
	}{
		{
			name:    "no cluster section: Talos's defaults",
			wantDNS: baseDNS,
			wantIPs: []string{"10.96.0.1", "127.0.0.1", "::1"},
		},
		{
			name: "every source",
			cluster: &machineconfig.ClusterSection{
				ControlPlane: &machineconfig.ControlPlane{Endpoint: "https://api.corp.example:6443"},
				APIServer:    &machineconfig.APIServer{CertSANs: []string{"extra.corp.example.", "*.lb.corp.example", "192.0.2.10", "::ffff:192.0.2.11"}},
				Network:      &machineconfig.ClusterNetwork{DNSDomain: "corp.local", ServiceSubnets: []string{"10.100.0.0/16", "fd00:20::/112"}},
			},
			addresses: []string{"127.0.110.2", "fd00::2"},
			hostname:  "cp-1",
			wantDNS: []string{
				"*.lb.corp.example", "api.corp.example", "cp-1", "extra.corp.example", "kubernetes", "kubernetes.default",
				"kubernetes.default.svc", "kubernetes.default.svc.corp.local", "localhost",
			},
			wantIPs: []string{"10.100.0.1", "127.0.0.1", "127.0.110.2", "192.0.2.10", "192.0.2.11", "::1", "fd00::2", "fd00:20::1"},
		},
		{
			name:    "default /12 service subnet given with host bits",
			cluster: &machineconfig.ClusterSection{Network: &machineconfig.ClusterNetwork{ServiceSubnets: []string{"10.96.5.7/12"}}},
			wantDNS: baseDNS,
			wantIPs: []string{"10.96.0.1", "127.0.0.1", "::1"},
		},
		{
			name: "endpoint given as an IP address, duplicates of node addresses",
			cluster: &machineconfig.ClusterSection{
				ControlPlane: &machineconfig.ControlPlane{Endpoint: "https://127.0.110.2:6443"},
				APIServer:    &machineconfig.APIServer{CertSANs: []string{"127.0.110.2", "localhost"}},
			},
			addresses: []string{"127.0.110.2"},
			wantDNS:   baseDNS,
			wantIPs:   []string{"10.96.0.1", "127.0.0.1", "127.0.110.2", "::1"},
		},
		{
			name: "every bad field named",
			cluster: &machineconfig.ClusterSection{
				ControlPlane: &machineconfig.ControlPlane{Endpoint: "https://under_score.example:6443"},
				APIServer:    &machineconfig.APIServer{CertSANs: []string{"ok.example", "", "Bad_Name", "0.0.0.0", "a.*.example"}},
				Network:      &machineconfig.ClusterNetwork{DNSDomain: "-corp", ServiceSubnets: []string{"10.96.0.0/12", "10.96.0.0", "10.1.2.3/32"}},
			},
			wantErr: []string{
				`cluster.apiServer.certSANs[1]: "" is empty`,
				`cluster.apiServer.certSANs[2]: "Bad_Name" is neither an IP address nor a DNS name`,
				`cluster.apiServer.certSANs[3]: "0.0.0.0" is the unspecified address`,
				`cluster.apiServer.certSANs[4]: "a.*.example" is neither`,
				`cluster.controlPlane.endpoint: host "under_score.example"`,
				`cluster.network.dnsDomain: "-corp" is not a DNS domain`,
				`cluster.network.serviceSubnets[1]: "10.96.0.0" is not a CIDR subnet`,
				`cluster.network.serviceSubnets[2]: "10.1.2.3/32" has no room`,
			},
		},
		{
			name:    "endpoint without a host",
			cluster: &machineconfig.ClusterSection{ControlPlane: &machineconfig.ControlPlane{Endpoint: "https://:6443"}},
			wantErr: []string{`cluster.controlPlane.endpoint: "https://:6443" has no host`},
		},
		{
			name:      "bad node address",
			addresses: []string{"not-an-ip"},
			wantErr:   []string{`node address "not-an-ip"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			sans, err := kubernetes.APIServerSANs(tc.cluster, tc.addresses, tc.hostname)
			if len(tc.wantErr) > 0 {
				require.Error(t, err)

				for _, want := range tc.wantErr {
					assert.ErrorContains(t, err, want)
				}

				assert.Equal(t, kubernetes.SANs{}, sans)

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.wantDNS, sans.DNSNames)
			assert.Equal(t, tc.wantIPs, sans.IPStrings())
		})
	}
}

func TestServiceIP(t *testing.T) {
	t.Parallel()

	for subnet, want := range map[string]string{
		"10.96.0.0/12":      "10.96.0.1",
		"172.16.4.0/24":     "172.16.4.1",
		"10.0.0.0/31":       "10.0.0.1",
		"fd00:db8:20::/112": "fd00:db8:20::1",
	} {
		ip, err := kubernetes.ServiceIP(subnet)
		require.NoError(t, err, subnet)
		assert.Equal(t, want, ip.String(), subnet)
	}
}

// FuzzAPIServerSANs feeds arbitrary config values: APIServerSANs refuses them or returns SANs that
// are valid IP addresses and DNS names, always with the in-cluster names and localhost.
func FuzzAPIServerSANs(f *testing.F) {
	f.Add("extra.example", "https://cp.example:6443", "cluster.local", "10.96.0.0/12")
	f.Add("*.lb.example", "https://[fd00::1]:6443", "corp.local.", "fd00:20::/112")
	f.Add("", "https://:6443", "-x", "10.1.2.3/32")

	f.Fuzz(func(t *testing.T, san, endpoint, dnsDomain, subnet string) {
		sans, err := kubernetes.APIServerSANs(&machineconfig.ClusterSection{
			ControlPlane: &machineconfig.ControlPlane{Endpoint: endpoint},
			APIServer:    &machineconfig.APIServer{CertSANs: []string{san}},
			Network:      &machineconfig.ClusterNetwork{DNSDomain: dnsDomain, ServiceSubnets: []string{subnet}},
		}, []string{"127.0.110.2"}, "")
		if err != nil {
			return
		}

		require.Contains(t, sans.DNSNames, "kubernetes.default.svc")
		require.Contains(t, sans.DNSNames, "localhost")

		for _, ip := range sans.IPs {
			require.True(t, ip.IsValid())
			require.False(t, ip.IsUnspecified())
		}

		for _, name := range sans.DNSNames {
			require.NotEmpty(t, name)
			require.NotContains(t, name, " ")
		}
	})
}
