package machineconfig_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

const patchBase = `version: v1alpha1
machine:
    type: worker
    token: abc
    certSANs:
        - a.example
    acceptedCAs:
        - crt: Q0Ex
        - crt: Q0Ey
    network:
        hostname: node1
        interfaces:
            - interface: eth0
              dhcp: true
            - interface: eth1
              addresses:
                - 10.3.5.4/32
    kubelet:
        extraArgs:
            v: "2"
cluster:
    clusterName: test
---
apiVersion: v1alpha1
kind: ExtensionServiceConfig
name: foo
environment:
    - FOO=BAR
---
apiVersion: v1alpha1
kind: SideroLinkConfig
apiUrl: https://siderolink.example/join
`

func TestApplyStrategicMerge(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name  string
		patch string
		want  string // the full expected config text: order and layout are kept
	}{
		{
			name:  "nested maps merge and keep their siblings",
			patch: "machine:\n  kubelet:\n    extraArgs:\n      feature-gates: X=true\n  network:\n    hostname: node2\n",
			want: replaceAll(patchBase,
				`            v: "2"`, "            v: \"2\"\n            feature-gates: X=true",
				"hostname: node1", "hostname: node2"),
		},
		{
			name:  "lists append",
			patch: "machine:\n  acceptedCAs:\n    - crt: Q0Ez\n  certSANs: [b.example]\n",
			want: replaceAll(patchBase,
				"        - crt: Q0Ey", "        - crt: Q0Ey\n        - crt: Q0Ez",
				"        - a.example", "        - a.example\n        - b.example"),
		},
		{
			name:  "$patch: delete on a key",
			patch: "machine:\n  network:\n    hostname:\n      $patch: delete\n  kubelet:\n    $patch: delete\n",
			want: replaceAll(patchBase,
				"        hostname: node1\n", "",
				"    kubelet:\n        extraArgs:\n            v: \"2\"\n", ""),
		},
		{
			name:  "$patch: delete on a list element matches its fields",
			patch: "machine:\n  acceptedCAs:\n    - crt: Q0Ex\n      $patch: delete\n  network:\n    interfaces:\n      - interface: eth1\n        $patch: delete\n",
			want: replaceAll(patchBase,
				"        - crt: Q0Ex\n", "",
				"            - interface: eth1\n              addresses:\n                - 10.3.5.4/32\n", ""),
		},
		{
			name:  "delete and add in one list",
			patch: "machine:\n  acceptedCAs:\n    - $patch: delete\n      crt: Q0Ex\n    - crt: Q0Ez\n",
			want: replaceAll(patchBase,
				"        - crt: Q0Ex\n        - crt: Q0Ey", "        - crt: Q0Ey\n        - crt: Q0Ez"),
		},
		{
			name:  "scalars replace, new keys are added",
			patch: "machine:\n  token: def\n  nodeLabels:\n    role: edge\ncluster:\n  clusterName: other\n",
			want: replaceAll(patchBase,
				"token: abc", "token: def",
				"            v: \"2\"\n", "            v: \"2\"\n    nodeLabels:\n        role: edge\n",
				"clusterName: test", "clusterName: other"),
		},
		{
			name:  "anchors and aliases of a patch are expanded",
			patch: "cluster:\n  id: &id abc\n  secret: *id\n  network: &net {dnsDomain: x.local}\n  discovery: *net\n",
			want: replaceAll(patchBase, "    clusterName: test\n",
				"    clusterName: test\n    id: abc\n    secret: abc\n    network:\n        dnsDomain: x.local\n    discovery:\n        dnsDomain: x.local\n"),
		},
		{
			name:  "other documents merge by apiVersion, kind and name",
			patch: "apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: foo\nenvironment:\n  - BAZ=QUX\n",
			want:  replaceAll(patchBase, "    - FOO=BAR", "    - FOO=BAR\n    - BAZ=QUX"),
		},
		{
			name:  "$patch: delete at the top deletes a document",
			patch: "apiVersion: v1alpha1\nkind: SideroLinkConfig\n$patch: delete\n",
			want:  replaceAll(patchBase, "---\napiVersion: v1alpha1\nkind: SideroLinkConfig\napiUrl: https://siderolink.example/join\n", ""),
		},
		{
			name:  "a document the config lacks is appended; several documents in one patch",
			patch: "machine:\n  token: xyz\n---\napiVersion: v1alpha1\nkind: TrustedRootsConfig\nname: corp\ncertificates: PEM\n",
			want: replaceAll(patchBase, "token: abc", "token: xyz") +
				"---\napiVersion: v1alpha1\nkind: TrustedRootsConfig\nname: corp\ncertificates: PEM\n",
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cfg := mustParse(t, []byte(patchBase))

			p, err := machineconfig.LoadPatch([]byte(tc.patch))
			require.NoError(t, err)
			assert.False(t, p.IsJSONPatch())

			patched, err := machineconfig.Apply(cfg, p)
			require.NoError(t, err)

			assert.Equal(t, tc.want, string(mustBytes(t, patched)))
			assert.Equal(t, patchBase, string(mustBytes(t, cfg)), "Apply modified its input")
		})
	}
}

// TestApplyKeepsLayout checks the exact text: key order and block style survive a merge, and a
// flow-style patch does not leak into the config.
func TestApplyKeepsLayout(t *testing.T) {
	t.Parallel()

	cfg := mustParse(t, []byte(patchBase))

	p, err := machineconfig.LoadPatch([]byte(`{"machine": {"certSANs": ["b.example"], "install": {"disk": "/dev/sda"}}}`))
	require.NoError(t, err)

	patched, err := machineconfig.Apply(cfg, p)
	require.NoError(t, err)

	want := replaceAll(patchBase,
		"        - a.example", "        - a.example\n        - b.example",
		"            v: \"2\"\n", "            v: \"2\"\n    install:\n        disk: /dev/sda\n")
	assert.Equal(t, want, string(mustBytes(t, patched)))
}

func TestApplyJSONPatch(t *testing.T) {
	t.Parallel()

	const base = `version: v1alpha1
machine:
    type: worker
    certSANs:
        - a.example
    acceptedCAs:
        - crt: Q0Ex
    features:
        rbac: true
cluster:
    clusterName: test
`

	tests := []struct {
		name  string
		patch string
		want  string // exact text: key order and block style are kept
	}{
		{
			name:  "add",
			patch: `[{"op": "add", "path": "/machine/acceptedCAs/-", "value": {"crt": "Q0Ey"}}, {"op": "add", "path": "/machine/token", "value": "true"}]`,
			want: replaceAll(base,
				"        - crt: Q0Ex\n", "        - crt: Q0Ex\n        - crt: Q0Ey\n",
				"        rbac: true\n", "        rbac: true\n    token: \"true\"\n"),
		},
		{
			name:  "remove",
			patch: `[{"op": "remove", "path": "/machine/acceptedCAs/0"}, {"op": "remove", "path": "/machine/features"}]`,
			want: replaceAll(base,
				"    acceptedCAs:\n        - crt: Q0Ex\n", "    acceptedCAs: []\n",
				"    features:\n        rbac: true\n", ""),
		},
		{
			name:  "replace",
			patch: `[{"op": "replace", "path": "/machine/certSANs/0", "value": "b.example"}, {"op": "replace", "path": "/machine/features/rbac", "value": false}]`,
			want:  replaceAll(base, "a.example", "b.example", "rbac: true", "rbac: false"),
		},
		{
			name:  "move, copy and test, written as a YAML list",
			patch: "- op: test\n  path: /cluster/clusterName\n  value: test\n- op: copy\n  from: /cluster/clusterName\n  path: /machine/nodeName\n- op: move\n  from: /machine/certSANs\n  path: /cluster/certSANs\n",
			want: `version: v1alpha1
machine:
    type: worker
    acceptedCAs:
        - crt: Q0Ex
    features:
        rbac: true
    nodeName: test
cluster:
    clusterName: test
    certSANs:
        - a.example
`,
		},
	}

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cfg := mustParse(t, []byte(base))

			p, err := machineconfig.LoadPatch([]byte(tc.patch))
			require.NoError(t, err)
			assert.True(t, p.IsJSONPatch())

			patched, err := machineconfig.Apply(cfg, p)
			require.NoError(t, err)

			assert.Equal(t, tc.want, string(mustBytes(t, patched)))
			assert.Equal(t, base, string(mustBytes(t, cfg)), "Apply modified its input")
		})
	}
}

func TestApplyInOrder(t *testing.T) {
	t.Parallel()

	cfg := mustParse(t, []byte("version: v1alpha1\nmachine:\n    certSANs: []\n"))

	patches, err := machineconfig.LoadPatches([]string{
		"machine:\n  certSANs: [a]\n",
		`[{"op": "replace", "path": "/machine/certSANs/0", "value": "b"}]`,
		"machine:\n  certSANs: [c]\n",
	})
	require.NoError(t, err)

	patched, err := machineconfig.Apply(cfg, patches...)
	require.NoError(t, err)

	assert.Equal(t, []string{"b", "c"}, patched.Document().Machine.CertSANs)
}

func TestLoadPatches(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	file := filepath.Join(dir, "patch.yaml")
	require.NoError(t, os.WriteFile(file, []byte("machine:\n  certSANs: [from-file]\n"), 0o600))

	patches, err := machineconfig.LoadPatches([]string{"@" + file, "machine:\n  certSANs: [inline]\n"})
	require.NoError(t, err)
	require.Len(t, patches, 2)

	patched, err := machineconfig.Apply(mustParse(t, []byte("version: v1alpha1\n")), patches...)
	require.NoError(t, err)
	assert.Equal(t, []string{"from-file", "inline"}, patched.Document().Machine.CertSANs)

	missing := filepath.Join(dir, "missing.yaml")
	_, err = machineconfig.LoadPatches([]string{"@" + missing})
	require.ErrorContains(t, err, missing)

	broken := filepath.Join(dir, "broken.yaml")
	require.NoError(t, os.WriteFile(broken, []byte("machine: [\n"), 0o600))
	_, err = machineconfig.LoadPatches([]string{"@" + broken})
	require.ErrorContains(t, err, broken)
	require.ErrorContains(t, err, "line")
}

func replaceAll(s string, oldNew ...string) string {
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !containsOnce(s, oldNew[i]) {
			panic("test setup: " + oldNew[i] + " is not in the text exactly once")
		}

		s = replaceOnce(s, oldNew[i], oldNew[i+1])
	}

	return s
}
