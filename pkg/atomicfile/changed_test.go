package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/atomicfile"
)

func TestWriteChanged(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets")

	written, err := atomicfile.WriteChanged(dir, map[string][]byte{"b.key": []byte("b1"), "a.crt": []byte("a1")})
	require.NoError(t, err)
	assert.Equal(t, []string{"a.crt", "b.key"}, written, "first write: every file, sorted")

	info, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm())

	written, err = atomicfile.WriteChanged(dir, map[string][]byte{"b.key": []byte("b2"), "a.crt": []byte("a1")})
	require.NoError(t, err)
	assert.Equal(t, []string{"b.key"}, written, "only the changed file")

	data, err := os.ReadFile(filepath.Join(dir, "b.key"))
	require.NoError(t, err)
	assert.Equal(t, "b2", string(data))

	written, err = atomicfile.WriteChanged(dir, map[string][]byte{"b.key": []byte("b2"), "a.crt": []byte("a1")})
	require.NoError(t, err)
	assert.Nil(t, written, "nothing changed, nothing written")

	require.NoError(t, os.Chmod(dir, 0o755))
	_, err = atomicfile.WriteChanged(dir, nil)
	require.NoError(t, err)

	info, err = os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm(), "an existing directory is tightened")
}

func TestDigestIsSha256sum(t *testing.T) {
	// printf abc | sha256sum
	assert.Equal(t, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", atomicfile.Digest([]byte("abc")))
}
