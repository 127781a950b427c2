// Package atomicfile owns writing files so that a crash leaves either the old content or the new,
// never a partial file, always with mode 0600 (every file nodepki writes may hold a secret).
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes data to a temporary file beside path, syncs it and renames it into place.
func WriteFile(path string, data []byte) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing %q: %w", path, err)
	}

	defer func() {
		if err != nil {
			tmp.Close()           //nolint:errcheck
			os.Remove(tmp.Name()) //nolint:errcheck
		}
	}()

	steps := []func() error{
		func() error { return tmp.Chmod(0o600) },
		func() error { _, werr := tmp.Write(data); return werr },
		tmp.Sync,
		tmp.Close,
		func() error { return os.Rename(tmp.Name(), path) },
	}

	for _, step := range steps {
		if err = step(); err != nil {
			return fmt.Errorf("writing %q: %w", path, err)
		}
	}

	return nil
}
