package kubeconfig_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
)

// mine is a kubeconfig holding the demo cluster (under a renamed entry and a forced context name,
// as earlier merges leave it) beside another cluster of the same name.
const mine = `apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: https://other.example:6443
    certificate-authority-data: b3RoZXI=
- name: demo-1
  cluster:
    server: https://cp.demo.test:6443
    certificate-authority: /old/ca.crt
users:
- name: admin@demo
  user:
    token: other-token
- name: admin@demo-1
  user:
    client-certificate: /old/admin.crt
    client-key: /old/admin.key
- name: oidc
  user:
    token: oidc-token
contexts:
- name: admin@demo
  context:
    cluster: demo
    user: admin@demo
- name: prod
  context:
    cluster: demo-1
    user: admin@demo-1
    namespace: apps
- name: oidc@demo
  context:
    cluster: demo-1
    user: oidc
current-context: admin@demo
`

func TestUpdate(t *testing.T) {
	t.Parallel()

	ca := newCA(t)

	issued, err := kubeconfig.Issue(ca, kubeconfig.Admin("demo", "https://cp.demo.test:6443", ca.CrtPEM, time.Hour), time.Now())
	require.NoError(t, err)

	src := load(t, issued)
	srcUser := src.AuthInfos["admin@demo"]

	t.Run("only this cluster's entries take the credentials", func(t *testing.T) {
		t.Parallel()

		res, err := kubeconfig.Update([]byte(mine), issued)
		require.NoError(t, err)
		assert.False(t, res.Added)
		assert.Equal(t, []string{"demo-1"}, res.Clusters)
		assert.Equal(t, []string{"admin@demo-1"}, res.Users)
		assert.Equal(t, []string{"oidc@demo", "prod"}, res.Contexts)

		before, after := load(t, []byte(mine)), load(t, res.Data)

		assert.Equal(t, ca.CrtPEM, after.Clusters["demo-1"].CertificateAuthorityData)
		assert.Empty(t, after.Clusters["demo-1"].CertificateAuthority)
		assert.Equal(t, srcUser.ClientCertificateData, after.AuthInfos["admin@demo-1"].ClientCertificateData)
		assert.Equal(t, srcUser.ClientKeyData, after.AuthInfos["admin@demo-1"].ClientKeyData)
		assert.Empty(t, after.AuthInfos["admin@demo-1"].ClientCertificate)

		// Untouched: the other cluster, the token users, the contexts, the current context.
		assert.Equal(t, before.Clusters["demo"], after.Clusters["demo"])
		assert.Equal(t, before.AuthInfos["admin@demo"], after.AuthInfos["admin@demo"])
		assert.Equal(t, before.AuthInfos["oidc"], after.AuthInfos["oidc"])
		assert.Equal(t, before.Contexts, after.Contexts)
		assert.Equal(t, "admin@demo", after.CurrentContext)
	})

	t.Run("a user shared with another cluster keeps its credentials", func(t *testing.T) {
		t.Parallel()

		cfg := load(t, []byte(mine))
		cfg.Contexts["admin@demo"].AuthInfo = "admin@demo-1"

		data, err := clientcmd.Write(*cfg)
		require.NoError(t, err)

		res, err := kubeconfig.Update(data, issued)
		require.NoError(t, err)
		assert.Empty(t, res.Users)
		assert.Equal(t, "/old/admin.crt", load(t, res.Data).AuthInfos["admin@demo-1"].ClientCertificate)
		assert.Equal(t, ca.CrtPEM, load(t, res.Data).Clusters["demo-1"].CertificateAuthorityData)
	})

	t.Run("a file without this cluster gets it merged in, its current context kept", func(t *testing.T) {
		t.Parallel()

		res, err := kubeconfig.Update([]byte(other), issued)
		require.NoError(t, err)
		assert.True(t, res.Added)

		after := load(t, res.Data)
		assert.Equal(t, "prod", after.CurrentContext)
		require.Len(t, res.Contexts, 1)
		assert.Equal(t, "https://cp.demo.test:6443", after.Clusters[after.Contexts[res.Contexts[0]].Cluster].Server)
		assert.Equal(t, "https://other.example:6443", after.Clusters["demo"].Server)
	})

	t.Run("an empty file becomes the issued kubeconfig", func(t *testing.T) {
		t.Parallel()

		res, err := kubeconfig.Update(nil, issued)
		require.NoError(t, err)
		assert.True(t, res.Added)
		assert.Equal(t, src, load(t, res.Data))
	})

	t.Run("bad input", func(t *testing.T) {
		t.Parallel()

		_, err := kubeconfig.Update([]byte("clusters: [unclosed"), issued)
		assert.ErrorContains(t, err, "the existing kubeconfig cannot be read")

		_, err = kubeconfig.Update([]byte(mine), []byte(other))
		assert.ErrorContains(t, err, "exactly one cluster, user and context")
	})
}

// FuzzUpdate feeds arbitrary existing files to Update: it refuses, or returns a loadable file in
// which every cluster entry it names has the issued server and CA data.
func FuzzUpdate(f *testing.F) {
	crt, key, err := certs.NewRootCA(certs.RootKubernetes)
	require.NoError(f, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(f, err)

	issued, err := kubeconfig.Issue(ca, kubeconfig.Admin("demo", "https://cp.demo.test:6443", ca.CrtPEM, time.Hour), time.Now())
	require.NoError(f, err)

	f.Add([]byte(mine))
	f.Add([]byte(other))
	f.Add(issued)
	f.Add([]byte("contexts: [{name: x, context: {cluster: demo-01, user: u}}]\nclusters: [{name: demo-01, cluster: {server: 'https://cp.demo.test:6443'}}]\nusers: [{name: u}]"))

	f.Fuzz(func(t *testing.T, existing []byte) {
		res, err := kubeconfig.Update(existing, issued)
		if err != nil {
			return
		}

		cfg := load(t, res.Data)
		require.NotEmpty(t, res.Clusters)

		for _, name := range res.Clusters {
			require.Equal(t, "https://cp.demo.test:6443", cfg.Clusters[name].Server)
			require.Equal(t, ca.CrtPEM, cfg.Clusters[name].CertificateAuthorityData)
		}
	})
}
