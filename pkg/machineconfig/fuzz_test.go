package machineconfig_test

import (
	"testing"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// fuzzSeedConfig is a small complete v1alpha1 document.
const fuzzSeedConfig = limitsBase

// FuzzParse: any input is parsed, validated, redacted and encoded without a panic, and a config
// that parses encodes to something that parses again.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{fuzzSeedConfig, fuzzSeedConfig + "x: &a [*a]\n", "version: v1alpha1\n---\nkind: X\n", laughs("y", 3), ""} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := machineconfig.Parse(data)
		if err != nil {
			return
		}

		_ = cfg.Validate()

		if _, err = cfg.Redacted(); err != nil {
			t.Fatalf("redacting a parsed config: %v", err)
		}

		out, err := cfg.Bytes()
		if err != nil {
			t.Fatalf("encoding a parsed config: %v", err)
		}

		if _, err = machineconfig.Parse(out); err != nil {
			t.Fatalf("a parsed config does not parse again: %v\n%s", err, out)
		}
	})
}

// FuzzPatch: any patch (strategic merge or JSON) is loaded and applied to a config without a panic.
func FuzzPatch(f *testing.F) {
	for _, seed := range []string{
		"machine:\n  certSANs: [b.example]\n",
		"machine:\n  certSANs:\n    - $patch: delete\n      x: 1\n",
		`[{"op": "add", "path": "/machine/certSANs/-", "value": "c.example"}]`,
		"- op: remove\n  path: /machine/certSANs/0\n",
		`[{"op": "copy", "from": "/machine", "path": "/cluster/m"}]`,
		"machine:\n  certSANs: &a [*a]\n",
		laughs("machine", 3),
	} {
		f.Add([]byte(seed))
	}

	base, err := machineconfig.Parse([]byte(fuzzSeedConfig))
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := machineconfig.LoadPatch(data)
		if err != nil {
			return
		}

		patched, err := machineconfig.Apply(base, p)
		if err != nil {
			return
		}

		_ = patched.Validate()

		if _, err = machineconfig.Diff(base, patched); err != nil {
			t.Fatalf("diffing a patched config: %v", err)
		}
	})
}
