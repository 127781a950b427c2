package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestWriteFilesSyncsTheDirectories: after the renames, every directory written to is synced.
func TestWriteFilesSyncsTheDirectories(t *testing.T) {
	t.Parallel()

	a, b := t.TempDir(), t.TempDir()

	var synced []string

	require.NoError(t, writeFiles([]string{filepath.Join(a, "x"), filepath.Join(b, "y"), filepath.Join(a, "z")}, [][]byte{{1}, {2}, {3}},
		func(dir string) error {
			synced = append(synced, dir)

			return syncDir(dir)
		}))

	assert.ElementsMatch(t, []string{a, b}, synced)
}

// TestWriteFilesReportsADirectorySyncFailure: a failed directory sync is an error, not a silent
// loss of durability.
func TestWriteFilesReportsADirectorySyncFailure(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	err := writeFiles([]string{filepath.Join(dir, "x")}, [][]byte{{1}}, func(string) error { return errors.New("disk gone") })
	require.ErrorContains(t, err, "disk gone")
}

// TestFailedWriteLeavesNoTemporaryFile: a write that fails removes its temporary files.
func TestFailedWriteLeavesNoTemporaryFile(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(dir, "taken"), 0o700))

	// The second file's rename fails: its target is a non-empty directory.
	require.NoError(t, os.WriteFile(filepath.Join(dir, "taken", "keep"), nil, 0o600))

	err := WriteFiles([]string{filepath.Join(dir, "ok"), filepath.Join(dir, "taken")}, [][]byte{{1}, {2}})
	require.Error(t, err)

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)

	for _, e := range entries {
		assert.NotContains(t, e.Name(), ".tmp-", "temporary file left behind")
	}
}
