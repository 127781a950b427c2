package docs_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var (
	// binDir holds nodepkid and nodepkictl, built once for every document.
	binDir string
	// goEnv is Go's environment of the test run, handed to the reader's shell.
	goEnv = map[string]string{}
)

func TestMain(m *testing.M) {
	flag.Parse()

	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if testing.Short() {
		fmt.Println("docs: skipped in -short mode (they run local clusters)")

		return 0
	}

	dir, err := os.MkdirTemp("", "nodepki-docs-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, "docs:", err)

		return 1
	}

	defer os.RemoveAll(dir)

	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/nodepki/nodepki/cmd/nodepkid", "github.com/nodepki/nodepki/cmd/nodepkictl")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr

	if err = build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "docs: building the binaries:", err)

		return 1
	}

	binDir = dir

	names := []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOFLAGS", "GOTOOLCHAIN"}

	out, err := exec.Command("go", append([]string{"env"}, names...)...).Output()
	if err != nil {
		fmt.Fprintln(os.Stderr, "docs: go env:", err)

		return 1
	}

	for i, value := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
		if i < len(names) {
			goEnv[names[i]] = value
		}
	}

	goEnv["TMPDIR"] = os.Getenv("TMPDIR")

	return m.Run()
}
