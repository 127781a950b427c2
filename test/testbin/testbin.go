// Package testbin builds nodepkid and nodepkictl for the test packages under test/ that run them as
// real processes: once per test binary, into a temporary directory removed when the tests end.
package testbin

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Binaries are the freshly built commands under test.
type Binaries struct {
	Dir        string
	Nodepkid   string
	Nodepkictl string
}

// Main is the whole TestMain of such a package: in -short mode it skips the package (its tests
// run real processes); otherwise it builds the binaries, hands them to setup and runs the tests.
// It exits the process with the tests' status.
func Main(m *testing.M, suite string, setup func(Binaries) error) {
	flag.Parse()

	os.Exit(run(m, suite, setup))
}

func run(m *testing.M, suite string, setup func(Binaries) error) int {
	if testing.Short() {
		fmt.Printf("%s: skipped in -short mode (the tests run real processes)\n", suite)

		return 0
	}

	dir, err := os.MkdirTemp("", "nodepki-"+suite+"-*")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", suite, err)

		return 1
	}

	defer os.RemoveAll(dir)

	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator),
		"github.com/nodepki/nodepki/cmd/nodepkid", "github.com/nodepki/nodepki/cmd/nodepkictl")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr

	if err = build.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: building nodepkid and nodepkictl: %v\n", suite, err)

		return 1
	}

	bin := Binaries{Dir: dir, Nodepkid: filepath.Join(dir, "nodepkid"), Nodepkictl: filepath.Join(dir, "nodepkictl")}

	if err = setup(bin); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", suite, err)

		return 1
	}

	return m.Run()
}
