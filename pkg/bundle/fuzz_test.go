package bundle_test

import (
	"testing"

	"github.com/nodepki/nodepki/pkg/bundle"
)

// FuzzParse: any secrets bundle input is parsed (and validated) without a panic.
func FuzzParse(f *testing.F) {
	b, err := bundle.Generate()
	if err != nil {
		f.Fatal(err)
	}

	data, err := b.Marshal()
	if err != nil {
		f.Fatal(err)
	}

	f.Add(data)
	f.Add([]byte("cluster:\n  id: x\n"))
	f.Add([]byte(""))

	f.Fuzz(func(t *testing.T, data []byte) {
		parsed, err := bundle.Parse(data)
		if err != nil {
			return
		}

		_ = parsed.Validate()

		if _, err = parsed.Marshal(); err != nil {
			t.Fatalf("encoding a parsed bundle: %v", err)
		}
	})
}
