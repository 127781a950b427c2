package machineconfig_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

func TestParseKeepsEveryDocument(t *testing.T) {
	t.Parallel()

	const input = `apiVersion: v1alpha1
kind: TrustedRootsConfig
name: corp
certificates: |
    -----BEGIN CERTIFICATE-----
---
version: v1alpha1 # the document nodepki reads
machine:
    type: controlplane
    unknownToNodepki:
        nested: [1, 2]
    certSANs: [a.example]
cluster:
    controlPlane:
        endpoint: https://cp.test:6443
    clusterName: demo
    network:
        dnsDomain: corp.local
        serviceSubnets: [10.96.0.0/12, fd00:20::/112]
    apiServer:
        certSANs: [api.corp.example]
        extraArgs: {v: "2"}
    adminKubeconfig:
        certLifetime: 720h0m0s
    zzz: last
    aaa: after
---
apiVersion: v1alpha1
kind: ExtensionServiceConfig
name: foo
`

	cfg := mustParse(t, []byte(input))

	assert.Equal(t, decodeAll(t, []byte(input)), decodeAll(t, mustBytes(t, cfg)))

	out := string(mustBytes(t, cfg))
	assert.Less(t, strings.Index(out, "zzz: last"), strings.Index(out, "aaa: after"), "key order changed")
	assert.Less(t, strings.Index(out, "TrustedRootsConfig"), strings.Index(out, "version: v1alpha1"), "document order changed")

	doc := cfg.Document()
	require.NotNil(t, doc.Machine)
	assert.Equal(t, machineconfig.TypeControlPlane, doc.Machine.Type)
	assert.Equal(t, []string{"a.example"}, doc.Machine.CertSANs)
	assert.Equal(t, "https://cp.test:6443", doc.Cluster.ControlPlane.Endpoint)
	assert.Equal(t, "demo", doc.Cluster.ClusterName)
	assert.Equal(t, &machineconfig.ClusterNetwork{DNSDomain: "corp.local", ServiceSubnets: []string{"10.96.0.0/12", "fd00:20::/112"}}, doc.Cluster.Network)
	assert.Equal(t, []string{"api.corp.example"}, doc.Cluster.APIServer.CertSANs)
	assert.Equal(t, machineconfig.Duration(720*time.Hour), doc.Cluster.AdminKubeconfig.CertLifetime)
	assert.True(t, cfg.IsControlPlane())
}

func TestDocumentDecodesPEM(t *testing.T) {
	t.Parallel()

	c := cluster(t)
	cp := mustParse(t, c.controlPlane)
	w := mustParse(t, c.worker)

	assert.True(t, cp.IsControlPlane())
	assert.False(t, w.IsControlPlane())

	assert.Equal(t, string(c.bundle.Certs.OS.Crt), string(cp.Document().Machine.CA.Crt))
	assert.Equal(t, string(c.bundle.Certs.OS.Key), string(cp.Document().Machine.CA.Key))
	assert.Equal(t, string(c.bundle.Certs.Etcd.Key), string(cp.Document().Cluster.Etcd.CA.Key))
	assert.Equal(t, string(c.bundle.Certs.K8sServiceAccount.Key), string(cp.Document().Cluster.ServiceAccount.Key))
	assert.Empty(t, w.Document().Machine.CA.Key)
	assert.Equal(t, string(c.bundle.Certs.K8s.Crt), string(w.Document().Cluster.CA.Crt))
}

func TestRedacted(t *testing.T) {
	t.Parallel()

	c := cluster(t)

	withExtensions := edit(t, c.controlPlane, func(d map[string]any) {
		section(d, "machine")["acceptedTokens"] = []any{"abcdef.0123456789abcdef"}
		section(d, "cluster")["acceptedServiceAccountKeys"] = []any{map[string]any{"key": b64(c.bundle.Certs.K8sServiceAccount.Key)}}
		section(d, "cluster")["aescbcEncryptionSecret"] = "c2VjcmV0"
	})

	redacted, err := mustParse(t, withExtensions).Redacted()
	require.NoError(t, err)

	for _, secret := range append(c.secrets(), "abcdef.0123456789abcdef", "c2VjcmV0") {
		assert.NotContains(t, string(redacted), strings.TrimSpace(secret))
	}

	doc := decode(t, redacted).(map[string]any)

	for _, path := range [][]string{
		{"machine", "token"},
		{"machine", "ca", "key"},
		{"cluster", "secret"},
		{"cluster", "token"},
		{"cluster", "secretboxEncryptionSecret"},
		{"cluster", "aescbcEncryptionSecret"},
		{"cluster", "ca", "key"},
		{"cluster", "aggregatorCA", "key"},
		{"cluster", "serviceAccount", "key"},
		{"cluster", "etcd", "ca", "key"},
	} {
		assert.Equal(t, machineconfig.Redacted, section(doc, path[:len(path)-1]...)[path[len(path)-1]], strings.Join(path, "."))
	}

	// What is public stays: certificates and the cluster ID.
	assert.Equal(t, b64(c.bundle.Certs.OS.Crt), section(doc, "machine", "ca")["crt"])
	assert.Equal(t, b64(c.bundle.Certs.Etcd.Crt), section(doc, "cluster", "etcd", "ca")["crt"])
	assert.Equal(t, c.bundle.Cluster.ID, section(doc, "cluster")["id"])

	// The worker's empty CA keys stay empty rather than look like secrets.
	redactedWorker, err := mustParse(t, c.worker).Redacted()
	require.NoError(t, err)
	assert.Empty(t, section(decode(t, redactedWorker).(map[string]any), "machine", "ca")["key"])

	// A redacted config still parses (the placeholder is allowed in PEM fields) but does not validate.
	parsed, err := machineconfig.Parse(redacted)
	require.NoError(t, err)
	require.Error(t, parsed.Validate())
}

func TestDiff(t *testing.T) {
	t.Parallel()

	c := cluster(t)
	cp := mustParse(t, c.controlPlane)

	same, err := machineconfig.Diff(cp, cp)
	require.NoError(t, err)
	assert.Empty(t, same)

	p, err := machineconfig.LoadPatch([]byte("machine:\n  certSANs: [new.example]\n  token: rotated.0123456789abcdef\n"))
	require.NoError(t, err)

	patched, err := machineconfig.Apply(cp, p)
	require.NoError(t, err)

	diff, err := machineconfig.Diff(cp, patched)
	require.NoError(t, err)

	assert.Contains(t, diff, "--- old\n+++ new\n@@ ")
	assert.Contains(t, diff, "\n+        - new.example\n")
	assert.Contains(t, diff, "\n-    certSANs: []\n")
	assert.NotContains(t, diff, "rotated.0123456789abcdef", "the diff shows a secret")
	assert.NotContains(t, diff, "+    token:", "a token change is hidden by redaction, so it does not show")

	for _, secret := range c.secrets() {
		assert.NotContains(t, diff, strings.TrimSpace(secret))
	}
}
