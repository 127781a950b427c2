package kubeconfig_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
)

// other is a kubeconfig of another cluster that happens to use the same names.
const other = `apiVersion: v1
kind: Config
clusters:
- name: demo
  cluster:
    server: https://other.example:6443
- name: prod
  cluster:
    server: https://prod.example:6443
users:
- name: admin@demo
  user:
    token: other-token
- name: prod-admin
  user:
    token: prod-token
contexts:
- name: admin@demo
  context:
    cluster: demo
    user: admin@demo
- name: prod
  context:
    cluster: prod
    user: prod-admin
current-context: prod
`

func TestMerge(t *testing.T) {
	t.Parallel()

	ca := newCA(t)
	spec := kubeconfig.Admin("demo", "https://cp.demo.test:6443", ca.CrtPEM, time.Hour)

	issue := func() []byte {
		data, err := kubeconfig.Issue(ca, spec, time.Now())
		require.NoError(t, err)

		return data
	}

	first, second := issue(), issue()

	t.Run("into an empty file", func(t *testing.T) {
		t.Parallel()

		res, err := kubeconfig.Merge(nil, first, kubeconfig.MergeOptions{})
		require.NoError(t, err)
		assert.Equal(t, "admin@demo", res.Context)
		assert.Empty(t, res.Renamed)
		assert.Equal(t, load(t, first), load(t, res.Data))
	})

	t.Run("fresh credentials of the same cluster replace the old ones", func(t *testing.T) {
		t.Parallel()

		merged, err := kubeconfig.Merge(nil, first, kubeconfig.MergeOptions{})
		require.NoError(t, err)

		res, err := kubeconfig.Merge(merged.Data, second, kubeconfig.MergeOptions{})
		require.NoError(t, err)
		assert.Empty(t, res.Renamed)
		assert.Equal(t, load(t, second), load(t, res.Data))
	})

	t.Run("another cluster's entries of the same names are kept", func(t *testing.T) {
		t.Parallel()

		res, err := kubeconfig.Merge([]byte(other), first, kubeconfig.MergeOptions{})
		require.NoError(t, err)
		assert.Equal(t, "admin@demo-1", res.Context)
		assert.Equal(t, []string{
			`cluster "demo" -> "demo-1" (the existing one has server https://other.example:6443)`,
			`context "admin@demo" -> "admin@demo-1" (the existing one points at cluster "demo")`,
			`user "admin@demo" -> "admin@demo-1" (the existing one is used with cluster "demo")`,
		}, res.Renamed)

		cfg := load(t, res.Data)
		before := load(t, []byte(other))

		for _, name := range []string{"demo", "prod"} {
			assert.Equal(t, before.Clusters[name], cfg.Clusters[name])
		}

		for _, name := range []string{"admin@demo", "prod"} {
			assert.Equal(t, before.Contexts[name], cfg.Contexts[name])
		}

		for _, name := range []string{"admin@demo", "prod-admin"} {
			assert.Equal(t, before.AuthInfos[name], cfg.AuthInfos[name])
		}

		issued := load(t, first)
		assert.Equal(t, "admin@demo-1", cfg.CurrentContext)
		assert.Equal(t, issued.Clusters["demo"], cfg.Clusters["demo-1"])
		assert.Equal(t, issued.AuthInfos["admin@demo"], cfg.AuthInfos["admin@demo-1"])
		assert.Equal(t, "demo-1", cfg.Contexts["admin@demo-1"].Cluster)
		assert.Equal(t, "admin@demo-1", cfg.Contexts["admin@demo-1"].AuthInfo)

		// Merging fresh credentials again updates the renamed entries in place.
		again, err := kubeconfig.Merge(res.Data, second, kubeconfig.MergeOptions{})
		require.NoError(t, err)
		assert.Equal(t, "admin@demo-1", again.Context)
		assert.Equal(t, res.Renamed, again.Renamed)

		cfg = load(t, again.Data)
		assert.Len(t, cfg.Clusters, 3)
		assert.Len(t, cfg.Contexts, 3)
		assert.Len(t, cfg.AuthInfos, 3)
		assert.Equal(t, load(t, second).AuthInfos["admin@demo"], cfg.AuthInfos["admin@demo-1"])
		assert.Equal(t, "demo-1", cfg.Contexts["admin@demo-1"].Cluster)
	})

	t.Run("forced context name", func(t *testing.T) {
		t.Parallel()

		res, err := kubeconfig.Merge(nil, first, kubeconfig.MergeOptions{ForceContextName: "lab"})
		require.NoError(t, err)
		assert.Equal(t, "lab", res.Context)
		assert.Equal(t, "demo", load(t, res.Data).Contexts["lab"].Cluster)

		res, err = kubeconfig.Merge(res.Data, second, kubeconfig.MergeOptions{ForceContextName: "lab"})
		require.NoError(t, err)
		assert.Empty(t, res.Renamed)
	})

	t.Run("forced context name of another cluster is refused", func(t *testing.T) {
		t.Parallel()

		_, err := kubeconfig.Merge([]byte(other), first, kubeconfig.MergeOptions{ForceContextName: "prod"})
		assert.ErrorContains(t, err, `context "prod" exists and points at cluster "prod": choose another --force-context-name`)
	})

	t.Run("unreadable existing file", func(t *testing.T) {
		t.Parallel()

		_, err := kubeconfig.Merge([]byte("clusters: [unclosed"), first, kubeconfig.MergeOptions{})
		assert.ErrorContains(t, err, "the existing kubeconfig cannot be read")
	})
}

func load(t *testing.T, data []byte) *clientcmdapi.Config {
	t.Helper()

	cfg, err := clientcmd.Load(data)
	require.NoError(t, err)

	return cfg
}

// FuzzMerge feeds arbitrary existing files to Merge: it refuses or returns a loadable file whose
// current context is the merged one, pointing at the issued server.
func FuzzMerge(f *testing.F) {
	crt, key, err := certs.NewRootCA(certs.RootKubernetes)
	require.NoError(f, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(f, err)

	issued, err := kubeconfig.Issue(ca, kubeconfig.Admin("demo", "https://cp.demo.test:6443", ca.CrtPEM, time.Hour), time.Now())
	require.NoError(f, err)

	f.Add([]byte(other), "")
	f.Add(issued, "")
	f.Add([]byte(other), "admin@demo")
	f.Add([]byte("contexts: [{name: x, context: {cluster: demo-1}}]\nclusters: [{name: demo, cluster: {server: a}}, {name: demo-1, cluster: {server: b}}]"), "")

	f.Fuzz(func(t *testing.T, existing []byte, force string) {
		res, err := kubeconfig.Merge(existing, issued, kubeconfig.MergeOptions{ForceContextName: force})
		if err != nil {
			return
		}

		cfg := load(t, res.Data)
		require.Equal(t, res.Context, cfg.CurrentContext)

		ctx := cfg.Contexts[res.Context]
		require.NotNil(t, ctx)
		require.Equal(t, "https://cp.demo.test:6443", cfg.Clusters[ctx.Cluster].Server)
		require.NotNil(t, cfg.AuthInfos[ctx.AuthInfo])
	})
}
