package kubernetes_test

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/kubernetes"
)

func TestAPIServerArgs(t *testing.T) {
	t.Parallel()

	cfg := kubernetes.APIServerConfig{
		Address:              netip.MustParseAddr("127.0.110.2"),
		PKIDir:               "/state/secrets/kubernetes",
		EtcdServers:          []string{"https://127.0.110.2:2379", "https://127.0.110.3:2379"},
		ServiceSubnets:       []string{"10.96.0.0/12", "fd00:20::/112"},
		ServiceAccountIssuer: "https://cp.example:6443",
	}

	args, err := cfg.Args()
	require.NoError(t, err)
	assert.Subset(t, args, kubernetes.APIServerFlags("/state/secrets/kubernetes"))
	assert.Subset(t, args, []string{
		"--bind-address=127.0.110.2",
		"--secure-port=6443",
		"--etcd-servers=https://127.0.110.2:2379,https://127.0.110.3:2379",
		"--service-cluster-ip-range=10.96.0.0/12,fd00:20::/112",
		"--service-account-issuer=https://cp.example:6443",
		"--requestheader-allowed-names=front-proxy-client",
	})
	assert.Equal(t, "https://127.0.110.2:6443", cfg.URL())

	cfg.ServiceSubnets = nil
	args, err = cfg.Args()
	require.NoError(t, err)
	assert.Contains(t, args, "--service-cluster-ip-range=10.96.0.0/12")

	_, err = kubernetes.APIServerConfig{
		EtcdServers:          []string{"http://127.0.110.2:2379"},
		ServiceSubnets:       []string{"10.96.0.0"},
		ServiceAccountIssuer: "issuer",
	}.Args()
	require.Error(t, err)

	for _, want := range []string{
		"want the node's own address", "no PKI directory", `etcd server "http://127.0.110.2:2379" is not an https URL`,
		`cluster.network.serviceSubnets[0]: "10.96.0.0" is not a CIDR subnet`, `service-account issuer "issuer"`,
	} {
		assert.ErrorContains(t, err, want)
	}
}
