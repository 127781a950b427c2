// Package etcdtest locates the etcd binaries tests run: bin/etcd, bin/etcdctl and bin/etcdutl of
// the repository (built by `make tools`), or those in $NODEPKI_ETCD_BIN. A test that needs them
// is skipped when they are missing, and fails in CI (CI=true), where `.ci/run` builds them first.
package etcdtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Binaries are the paths of the etcd binaries.
type Binaries struct {
	Etcd, Etcdctl, Etcdutl string
}

// Find locates the binaries, or says why they are missing.
func Find() (Binaries, error) {
	dir := os.Getenv("NODEPKI_ETCD_BIN")
	if dir == "" {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			return Binaries{}, fmt.Errorf("cannot locate the repository: %w", err)
		}

		dir = filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "bin")
	}

	b := Binaries{Etcd: filepath.Join(dir, "etcd"), Etcdctl: filepath.Join(dir, "etcdctl"), Etcdutl: filepath.Join(dir, "etcdutl")}

	for _, path := range []string{b.Etcd, b.Etcdctl, b.Etcdutl} {
		if _, err := os.Stat(path); err != nil {
			return Binaries{}, fmt.Errorf("%s is missing: run `make tools`", path)
		}
	}

	return b, nil
}

// Require returns the binaries; without them it skips the test, or fails it in CI.
func Require(t testing.TB) Binaries {
	t.Helper()

	b, err := Find()
	if err == nil {
		return b
	}

	if os.Getenv("CI") == "true" {
		t.Fatalf("this test needs the etcd binaries: %v", err)
	}

	t.Skipf("this test needs the etcd binaries: %v", err)

	return Binaries{}
}
