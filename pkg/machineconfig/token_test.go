package machineconfig

import (
	"bytes"
	"crypto/rand"
	"os"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var tokenPattern = regexp.MustCompile(`^[a-z0-9]{6}\.[a-z0-9]{16}$`)

func TestNewTokenRejectionSampling(t *testing.T) {
	t.Parallel()

	// 252..255 must be skipped (they would bias byte%36 towards 0-3); 0, 35, 36 and 251 map to
	// '0', 'z', '0' and 'z'.
	stream := []byte{252, 0, 255, 35, 36, 253, 251, 1, 2, 254, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25}

	token, err := NewToken(bytes.NewReader(stream))
	require.NoError(t, err)
	assert.Equal(t, "0z0z12.abcdefghijklmnop", token)

	_, err = NewToken(iotest.ErrReader(os.ErrClosed))
	require.ErrorIs(t, err, os.ErrClosed)

	_, err = NewToken(bytes.NewReader(bytes.Repeat([]byte{255}, 100)))
	require.Error(t, err, "a source of only rejected bytes runs dry instead of producing a token")
}

func TestNewTokenDistribution(t *testing.T) {
	t.Parallel()

	counts := map[rune]int{}

	for range 2000 {
		token, err := NewToken(rand.Reader)
		require.NoError(t, err)
		require.Regexp(t, tokenPattern, token)

		for _, c := range strings.ReplaceAll(token, ".", "") {
			counts[c]++
		}
	}

	// 44000 characters over 36 symbols: about 1222 each; a biased generator would not stay
	// within ±25% for every symbol.
	require.Len(t, counts, 36)

	for c, n := range counts {
		assert.InDelta(t, 1222, n, 305, "character %q", c)
	}
}

func TestValidToken(t *testing.T) {
	t.Parallel()

	for token, want := range map[string]bool{
		"abcdef.0123456789abcdef":  true,
		"ABCDEF.0123456789abcdef":  false,
		"abcde.0123456789abcdef":   false,
		"abcdef.0123456789abcde":   false,
		"abcdef:0123456789abcdef":  false,
		"abcdef.0123456789abcdef ": false,
		"abc-ef.0123456789abcdef":  false,
		"":                         false,
		"test-token":               false,
	} {
		assert.Equal(t, want, ValidToken(token), "%q", token)
	}
}

// FuzzValidToken: ValidToken never panics, and accepts exactly the tokens of NewToken's shape.
func FuzzValidToken(f *testing.F) {
	f.Add("abcdef.0123456789abcdef")
	f.Add("ABCDEF.0123456789abcdef")
	f.Add("")

	f.Fuzz(func(t *testing.T, token string) {
		assert.Equal(t, tokenPattern.MatchString(token), ValidToken(token), "%q", token)
	})
}
