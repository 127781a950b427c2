package api

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/x509"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/role"
)

// TestNodeServiceKubeconfig issues admin kubeconfigs on a control plane (127.0.110.2) and is
// refused them on a worker (127.0.110.3) and as os:reader.
func TestNodeServiceKubeconfig(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	lis := listenSamePort(t, "127.0.110.2", "127.0.110.3")
	cp := startNode(t, p, nodeSpec{addr: "127.0.110.2", controlPlane: true, lis: lis[0]})
	startNode(t, p, nodeSpec{addr: "127.0.110.3", lis: lis[1]})
	// The control plane forwards to the members it records only.
	addMember(t, cp.st, "127.0.110.3")

	admin := nodeClient(cp.dialAs(t, p, role.Admin))

	t.Run("lifetimes", func(t *testing.T) {
		for _, tc := range []struct {
			seconds int64
			want    time.Duration
		}{
			{0, kubeconfig.AdminLifetime},
			{3600, time.Hour},
		} {
			resp, err := admin.Kubeconfig(callCtx(t), &node.KubeconfigRequest{CrtTtlSeconds: tc.seconds})
			require.NoError(t, err)
			assert.Equal(t, "127.0.110.2", resp.GetNode())

			checkAdminKubeconfig(t, p, resp.GetKubeconfig(), tc.want)
		}
	})

	t.Run("bad lifetimes are refused", func(t *testing.T) {
		for _, seconds := range []int64{-1, int64(maxClientTTL/time.Second) + 1} {
			_, err := admin.Kubeconfig(callCtx(t), &node.KubeconfigRequest{CrtTtlSeconds: seconds})
			assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
			assert.Contains(t, err.Error(), "crt_ttl_seconds")
		}
	})

	t.Run("os:reader and os:operator are refused", func(t *testing.T) {
		for _, r := range []string{role.Reader, role.Operator} {
			_, err := nodeClient(cp.dialAs(t, p, r)).Kubeconfig(callCtx(t), &node.KubeconfigRequest{})
			assert.Equal(t, codes.PermissionDenied, status.Code(err), "%s: %v", r, err)
		}
	})

	t.Run("a worker refuses, naming the control plane", func(t *testing.T) {
		_, err := admin.Kubeconfig(toNode(callCtx(t), "127.0.110.3"), &node.KubeconfigRequest{})
		assert.Equal(t, codes.FailedPrecondition, status.Code(err), "%v", err)
		assert.Contains(t, err.Error(), "kubeconfigs are issued by control-plane nodes only")
		assert.Contains(t, err.Error(), "-n 127.0.0.2")
	})
}

func TestKubeconfigTTLFromConfig(t *testing.T) {
	t.Parallel()

	p := getPKI(t)

	for _, tc := range []struct {
		patch string
		want  time.Duration
	}{
		{"", kubeconfig.AdminLifetime},
		{"cluster:\n  adminKubeconfig:\n    certLifetime: 720h\n", 720 * time.Hour},
	} {
		raw := p.controlPlane
		if tc.patch != "" {
			raw = patchedConfig(t, raw, tc.patch)
		}

		cfg, err := machineconfig.Parse(raw)
		require.NoError(t, err)

		ttl, err := kubeconfigTTL(0, cfg)
		require.NoError(t, err)
		assert.Equal(t, tc.want, ttl)

		ttl, err = kubeconfigTTL(60, cfg)
		require.NoError(t, err)
		assert.Equal(t, time.Minute, ttl, "crt_ttl wins over the config")
	}
}

// checkAdminKubeconfig checks an admin kubeconfig of the test cluster: names, server, the accepted
// Kubernetes CA bundle as CA data, and a client certificate of the Kubernetes CA for admin in
// system:masters with the lifetime asked for.
func checkAdminKubeconfig(t *testing.T, p *testPKI, data []byte, lifetime time.Duration) {
	t.Helper()

	cfg, err := clientcmd.Load(data)
	require.NoError(t, err)

	const name = "admin@" + testClusterName

	require.Equal(t, name, cfg.CurrentContext)
	require.Contains(t, cfg.Contexts, name)
	assert.Equal(t, testClusterName, cfg.Contexts[name].Cluster)

	cluster := cfg.Clusters[testClusterName]
	require.NotNil(t, cluster)
	assert.Equal(t, "https://127.0.0.2:6443", cluster.Server)

	bundle, err := certs.ParseCertificates(cluster.CertificateAuthorityData)
	require.NoError(t, err)
	require.Len(t, bundle, 2)
	assert.True(t, bundle[0].Equal(p.oldK8sCA.Crt))
	assert.True(t, bundle[1].Equal(p.k8sCA.Crt))

	crt, err := certs.ParseCertificate(cfg.AuthInfos[name].ClientCertificateData)
	require.NoError(t, err)
	assert.Equal(t, "admin", crt.Subject.CommonName)
	assert.Equal(t, []string{"system:masters"}, crt.Subject.Organization)
	assert.WithinDuration(t, time.Now().Add(lifetime), crt.NotAfter, time.Minute)

	roots := x509.NewCertPool()
	roots.AddCert(p.k8sCA.Crt)

	_, err = crt.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	require.NoError(t, err, "the client certificate chains to the Kubernetes CA")

	key, err := certs.ParsePrivateKey(cfg.AuthInfos[name].ClientKeyData)
	require.NoError(t, err)
	assert.True(t, certs.KeyMatchesCertificate(crt, key))
}

// untarKubeconfig checks the archive holds exactly one file, kubeconfig, mode 0600, and returns it.
func untarKubeconfig(t *testing.T, archive []byte) []byte {
	t.Helper()

	gz, err := gzip.NewReader(bytes.NewReader(archive))
	require.NoError(t, err)

	tr := tar.NewReader(gz)

	hdr, err := tr.Next()
	require.NoError(t, err)
	assert.Equal(t, "kubeconfig", hdr.Name)
	assert.Equal(t, int64(0o600), hdr.Mode)
	assert.Equal(t, byte(tar.TypeReg), hdr.Typeflag)

	data, err := io.ReadAll(tr)
	require.NoError(t, err)

	_, err = tr.Next()
	assert.ErrorIs(t, err, io.EOF, "one file only")

	return data
}

// TestApplyConfigurationChecksKubernetesFields: a control plane refuses a config it could not
// issue its API server certificate from, naming the field, and keeps its config.
func TestApplyConfigurationChecksKubernetesFields(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	n := startNode(t, p, nodeSpec{addr: "127.0.110.4", controlPlane: true})
	admin := nodeClient(n.dialAs(t, p, role.Admin))

	for _, tc := range []struct {
		patch string
		want  string
	}{
		{`{"cluster": {"apiServer": {"certSANs": ["ok.example", "bad_name"]}}}`, `cluster.apiServer.certSANs[2]: "bad_name" is neither an IP address nor a DNS name`},
		{`{"cluster": {"network": {"serviceSubnets": ["10.96.0.0"]}}}`, `cluster.network.serviceSubnets[1]: "10.96.0.0" is not a CIDR subnet`},
		{`{"cluster": {"network": {"dnsDomain": "Corp_Local"}}}`, `cluster.network.dnsDomain: "Corp_Local" is not a DNS domain`},
	} {
		_, err := admin.ApplyConfiguration(callCtx(t), &node.ApplyConfigurationRequest{Patches: [][]byte{[]byte(tc.patch)}})
		assert.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
		assert.ErrorContains(t, err, tc.want)
	}

	raw, writes := n.store.snapshot()
	assert.Equal(t, p.controlPlane, raw)
	assert.Zero(t, writes)

	resp, err := admin.ApplyConfiguration(callCtx(t), &node.ApplyConfigurationRequest{Patches: [][]byte{[]byte(`{"cluster": {"apiServer": {"certSANs": ["api.example.com"]}}}`)}})
	require.NoError(t, err)
	assert.True(t, resp.GetChanged())
}
