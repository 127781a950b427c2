package docs_test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nodepki/nodepki/test/testbin"
)

var (
	// binDir holds nodepkid and nodepkictl, built once for every document.
	binDir string
	// goEnv is Go's environment of the test run, handed to the reader's shell.
	goEnv = map[string]string{}
)

func TestMain(m *testing.M) {
	testbin.Main(m, "docs", func(b testbin.Binaries) error {
		binDir = b.Dir

		names := []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOFLAGS", "GOTOOLCHAIN"}

		out, err := exec.Command("go", append([]string{"env"}, names...)...).Output()
		if err != nil {
			return fmt.Errorf("go env: %w", err)
		}

		for i, value := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
			if i < len(names) {
				goEnv[names[i]] = value
			}
		}

		goEnv["TMPDIR"] = os.Getenv("TMPDIR")

		return nil
	})
}
