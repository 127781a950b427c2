package machineconfig

import (
	"bufio"
	"io"
)

const (
	tokenAlphabet  = "0123456789abcdefghijklmnopqrstuvwxyz"
	tokenIDLen     = 6
	tokenSecretLen = 16
	// tokenByteLimit is the largest multiple of len(tokenAlphabet) that fits a byte; bytes at or
	// above it are discarded so that byte % 36 picks every character with the same probability.
	tokenByteLimit = 256 / len(tokenAlphabet) * len(tokenAlphabet)
)

// TokenFormatHint says what a token must look like. It never quotes the token it refuses, which
// may be a real secret with a typo.
//
//nolint:gosec // G101: an error message describing the token format, not a credential
const TokenFormatHint = `not a valid token: want 6 and 16 characters of [a-z0-9] joined by a dot, like "abcdef.0123456789abcdef"`

// NewToken returns a Kubernetes bootstrap-token-shaped string ([a-z0-9]{6}.[a-z0-9]{16}) read
// from random, the format Talos uses for both the bootstrap token and the trustd join token
// (machine.token).
func NewToken(random io.Reader) (string, error) {
	r := bufio.NewReader(random)
	out := make([]byte, 0, tokenIDLen+1+tokenSecretLen)

	for len(out) < cap(out) {
		if len(out) == tokenIDLen {
			out = append(out, '.')

			continue
		}

		c, err := r.ReadByte()
		if err != nil {
			return "", err
		}

		if int(c) >= tokenByteLimit {
			continue
		}

		out = append(out, tokenAlphabet[int(c)%len(tokenAlphabet)])
	}

	return string(out), nil
}

// ValidToken reports whether token has the shape NewToken produces.
func ValidToken(token string) bool {
	if len(token) != tokenIDLen+1+tokenSecretLen || token[tokenIDLen] != '.' {
		return false
	}

	for i := range len(token) {
		if i == tokenIDLen {
			continue
		}

		c := token[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}

	return true
}
