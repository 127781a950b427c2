package machineconfig_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

const limitsBase = `version: v1alpha1
machine:
    type: worker
    certSANs:
        - a.example
cluster:
    clusterName: test
`

// laughs is a "billion laughs" alias bomb of the given levels, ten aliases each, under key.
func laughs(key string, levels int) string {
	var b strings.Builder

	fmt.Fprintf(&b, "%s:\n  l0: &l0 [lol]\n", key)

	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "  l%d: &l%d [", i, i)

		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}

			fmt.Fprintf(&b, "*l%d", i-1)
		}

		b.WriteString("]\n")
	}

	return b.String()
}

// nested is a value nested depth lists deep.
func nested(depth int) string {
	return strings.Repeat("[", depth) + "x" + strings.Repeat("]", depth)
}

// copyBomb doubles a subtree with every copy operation.
func copyBomb(copies int) string {
	ops := []string{fmt.Sprintf(`{"op": "add", "path": "/machine/bomb", "value": {"x": %q}}`, strings.Repeat("a", 1024))}

	for i := range copies {
		ops = append(ops, fmt.Sprintf(`{"op": "copy", "from": "/machine/bomb", "path": "/machine/bomb/c%d"}`, i))
	}

	return "[" + strings.Join(ops, ",") + "]"
}

func manyOperations(n int) string {
	ops := make([]string, n)
	for i := range ops {
		ops[i] = `{"op": "add", "path": "/machine/certSANs/-", "value": "b.example"}`
	}

	return "[" + strings.Join(ops, ",") + "]"
}

// TestHostileYAMLIsRefused: every bomb is refused with an error, at load or apply, and never
// exhausts memory or the stack.
func TestHostileYAMLIsRefused(t *testing.T) {
	t.Parallel()

	base := []byte(limitsBase)

	for _, tc := range []struct {
		name    string
		config  string // a whole config, parsed
		patch   string // a patch, loaded and applied to limitsBase
		message string
	}{
		{name: "alias cycle in a strategic merge patch", patch: "machine:\n  certSANs: &a [*a]\n", message: "alias cycles are not allowed"},
		{name: "mapping alias cycle in a strategic merge patch", patch: "machine:\n  extra: &a {self: *a}\n", message: "alias cycles are not allowed"},
		{name: "alias bomb in a strategic merge patch", patch: laughs("machine", 9), message: "refusing it as an alias bomb"},
		{name: "alias bomb in a JSON patch value", patch: "- op: add\n  path: /machine/bomb\n  value: &v0 [x]\n" + laughsValue(9), message: "refusing it as an alias bomb"},
		{name: "alias cycle in a JSON patch value", patch: "- op: add\n  path: /machine/bomb\n  value: &v [*v]\n", message: "alias cycles are not allowed"},
		{name: "alias bomb in an unknown field of a whole config", config: limitsBase + laughs("unknownField", 9), message: "refusing it as an alias bomb"},
		{name: "alias cycle in an unknown field of a whole config", config: limitsBase + "unknownField: &a [*a]\n", message: "alias cycles are not allowed"},
		{name: "nesting too deep", patch: "machine:\n  deep: " + nested(machineconfig.MaxDepth+5) + "\n", message: "nested more than 100 levels deep"},
		{name: "JSON patch copy bomb", patch: copyBomb(30), message: "exceeding the limit 1048576"},
		{name: "JSON patch with too many operations", patch: manyOperations(machineconfig.MaxJSONPatchOperations + 1), message: "at most 1000 are allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			if tc.config != "" {
				_, err := machineconfig.Parse([]byte(tc.config))
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.message)

				return
			}

			err := applyPatch(t, base, tc.patch)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.message)
		})
	}

	t.Run("patches that grow the config past its bound", func(t *testing.T) {
		t.Parallel()

		grow := func(i int) machineconfig.Patch {
			p, err := machineconfig.LoadPatch(fmt.Appendf(nil, `[{"op": "add", "path": "/machine/big%d", "value": %q}]`, i, strings.Repeat("a", 1<<20)))
			require.NoError(t, err)

			return p
		}

		_, err := machineconfig.Apply(mustParse(t, base), grow(1), grow(2), grow(3), grow(4), grow(5))
		require.ErrorContains(t, err, "at most 4194304 are allowed")

		_, err = machineconfig.Parse(append([]byte(limitsBase+"pad: "), strings.Repeat("a", machineconfig.MaxConfigBytes)...))
		require.ErrorContains(t, err, "at most 4194304 are allowed")
	})
}

// laughsValue continues a JSON patch written in YAML with a bomb under the value's anchor.
func laughsValue(levels int) string {
	var b strings.Builder

	for i := 1; i <= levels; i++ {
		fmt.Fprintf(&b, "- op: test\n  path: /machine/type\n  value: &v%d [", i)

		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}

			fmt.Fprintf(&b, "*v%d", i-1)
		}

		b.WriteString("]\n")
	}

	return b.String()
}

func applyPatch(t *testing.T, base []byte, patch string) error {
	t.Helper()

	p, err := machineconfig.LoadPatch([]byte(patch))
	if err != nil {
		return err
	}

	_, err = machineconfig.Apply(mustParse(t, base), p)

	return err
}

// TestBoundedAliasesAreAccepted: anchors and aliases that expand within the bounds work, in
// patches and in whole configs, and a JSON patch within its limits applies.
func TestBoundedAliasesAreAccepted(t *testing.T) {
	t.Parallel()

	base := mustParse(t, []byte(limitsBase))

	p, err := machineconfig.LoadPatch([]byte("machine:\n  certSANs: &sans [b.example, c.example]\n  extra:\n    again: *sans\n" + laughs("laughs", 3)))
	require.NoError(t, err)

	patched, err := machineconfig.Apply(base, p)
	require.NoError(t, err)
	assert.Equal(t, []string{"a.example", "b.example", "c.example"}, patched.Document().Machine.CertSANs)

	jp, err := machineconfig.LoadPatch([]byte(copyBomb(5)))
	require.NoError(t, err)

	_, err = machineconfig.Apply(patched, jp)
	require.NoError(t, err, "a JSON patch that copies 32 KiB is within the limit")

	_, err = machineconfig.Parse([]byte(limitsBase + laughs("unknownField", 4)))
	require.NoError(t, err)
}

// TestRedactedFindsPrivateKeysByType: a private key is redacted wherever it is, in a field
// nodepki does not know or in another document, as PEM or base64 of PEM.
func TestRedactedFindsPrivateKeysByType(t *testing.T) {
	t.Parallel()

	c := cluster(t)
	key := c.bundle.Certs.OS.Key

	withKeys := edit(t, c.controlPlane, func(d map[string]any) {
		section(d, "machine")["unknownField"] = map[string]any{"deep": []any{b64(key)}}
		section(d, "cluster")["inlineKey"] = string(key)
	})

	other := "---\napiVersion: v1alpha1\nkind: SomethingElse\nname: x\nsecretMaterial: " + b64(c.bundle.Certs.Etcd.Key) + "\n"

	redacted, err := mustParse(t, append(withKeys, []byte(other)...)).Redacted()
	require.NoError(t, err)

	for _, secret := range []string{b64(key), strings.TrimSpace(string(key)), "PRIVATE KEY", b64(c.bundle.Certs.Etcd.Key)} {
		assert.NotContains(t, string(redacted), secret)
	}

	assert.Contains(t, string(redacted), b64(c.bundle.Certs.OS.Crt), "certificates stay")
}
