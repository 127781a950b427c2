package atomicfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// WriteChanged makes dir (0700, tightened if it exists: it holds private keys) hold files, by
// name: the files whose content differs from what is on disk are written together with
// WriteFiles, the others are left alone. It returns the names written, sorted; nil when nothing
// changed.
func WriteChanged(dir string, files map[string][]byte) ([]string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("error creating %s: %w", dir, err)
	}

	if err := os.Chmod(dir, 0o700); err != nil { //nolint:gosec // a directory: 0700 is owner-only, and it must be searchable
		return nil, fmt.Errorf("error setting permissions of %s: %w", dir, err)
	}

	var names []string

	for name, data := range files {
		current, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("error reading %s: %w", filepath.Join(dir, name), err)
		}

		if err == nil && bytes.Equal(current, data) {
			continue
		}

		names = append(names, name)
	}

	if len(names) == 0 {
		return nil, nil
	}

	slices.Sort(names)

	paths := make([]string, 0, len(names))
	contents := make([][]byte, 0, len(names))

	for _, name := range names {
		paths = append(paths, filepath.Join(dir, name))
		contents = append(contents, files[name])
	}

	if err := WriteFiles(paths, contents); err != nil {
		return nil, err
	}

	return names, nil
}

// Digest is the hex SHA-256 of a file's content, as the resources that describe written files
// record it (compare with `sha256sum FILE`).
func Digest(data []byte) string {
	sum := sha256.Sum256(data)

	return hex.EncodeToString(sum[:])
}
