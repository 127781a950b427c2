// Package atomicfile owns writing files so that a crash leaves either the old content or the new,
// never a partial file, always with mode 0600 (every file nodepki writes may hold a secret).
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// WriteFile writes data to a temporary file beside path, syncs it and renames it into place.
func WriteFile(path string, data []byte) error {
	return WriteFiles([]string{path}, [][]byte{data})
}

// WriteFiles writes every file to a temporary file beside it first and renames them into place
// only once all are written, so that a failure while writing leaves none of them changed. The
// directories are synced after the renames, so that the new names survive a power loss.
func WriteFiles(paths []string, contents [][]byte) error {
	return writeFiles(paths, contents, syncDir)
}

// writeFiles is WriteFiles with the directory sync given, so that tests can observe it.
func writeFiles(paths []string, contents [][]byte, syncDirectory func(string) error) (err error) {
	temps := make([]string, 0, len(paths))

	defer func() {
		if err != nil {
			for _, tmp := range temps {
				os.Remove(tmp)
			}
		}
	}()

	for i, path := range paths {
		tmp, err := writeTemp(path, contents[i])
		if err != nil {
			return err
		}

		temps = append(temps, tmp)
	}

	dirs := map[string]bool{}

	for i, path := range paths {
		if err := os.Rename(temps[i], path); err != nil {
			return fmt.Errorf("writing %q: %w", path, err)
		}

		dirs[filepath.Dir(path)] = true
	}

	for dir := range dirs {
		if err := syncDirectory(dir); err != nil {
			return fmt.Errorf("syncing directory %q: %w", dir, err)
		}
	}

	return nil
}

// syncDir makes the directory's entries (the renames) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}

	if err = d.Sync(); err != nil {
		d.Close()

		return err
	}

	return d.Close()
}

// writeTemp writes data, mode 0600 and synced, to a new temporary file beside path.
func writeTemp(path string, data []byte) (name string, err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("writing %q: %w", path, err)
	}

	steps := []func() error{
		func() error { return tmp.Chmod(0o600) },
		func() error { _, werr := tmp.Write(data); return werr },
		tmp.Sync,
		tmp.Close,
	}

	for _, step := range steps {
		if err = step(); err != nil {
			tmp.Close()
			os.Remove(tmp.Name())

			return "", fmt.Errorf("writing %q: %w", path, err)
		}
	}

	return tmp.Name(), nil
}
