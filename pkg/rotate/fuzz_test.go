package rotate

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// FuzzParsePlan: a plan file never panics the parser, and a plan it accepts saves and parses back
// to the same roots.
func FuzzParsePlan(f *testing.F) {
	f.Add([]byte("version: 1\nroots:\n    join-token:\n        new:\n            token: abcdef.0123456789abcdef\n"))
	f.Add([]byte("version: 1\nroots:\n    join-token:\n        old:\n            token: anything\n        new:\n            token: abcdef.0123456789abcdef\n"))
	f.Add([]byte("version: 1\nroots:\n    join-token:\n        new:\n            token: NOT-a-token\n"))
	f.Add([]byte("version: 1\nroots: {}\n"))
	f.Add([]byte("version: 2\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParsePlan(data)
		if err != nil {
			return
		}

		encoded, err := p.Bytes()
		require.NoError(t, err)

		again, err := ParsePlan(encoded)
		require.NoError(t, err, "%s", encoded)
		assert.Equal(t, p.Roots, again.Roots)
	})
}
