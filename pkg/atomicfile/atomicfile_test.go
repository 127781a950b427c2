package atomicfile_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/atomicfile"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")

	require.NoError(t, os.WriteFile(path, []byte("old"), 0o644))
	require.NoError(t, atomicfile.WriteFile(path, []byte("new")))

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, "new", string(data))

	info, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")

	require.Error(t, atomicfile.WriteFile(filepath.Join(dir, "missing", "f"), []byte("x")))
}

func TestWriteFilesChangesNothingOnFailure(t *testing.T) {
	dir := t.TempDir()
	kept := filepath.Join(dir, "kept")

	require.NoError(t, os.WriteFile(kept, []byte("old"), 0o600))
	require.Error(t, atomicfile.WriteFiles(
		[]string{kept, filepath.Join(dir, "missing", "f")},
		[][]byte{[]byte("new"), []byte("x")},
	))

	data, err := os.ReadFile(kept)
	require.NoError(t, err)
	require.Equal(t, "old", string(data), "the first file is not replaced when the second cannot be written")

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Len(t, entries, 1, "no temporary file is left behind")
}
