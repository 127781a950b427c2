// Package docs_test runs the documentation: every ```sh and ```bash block of README.md,
// docs/getting-started.md and docs/rotation.md, verbatim and in order, in one bash session per
// file (so variables and exports carry from block to block, as in the reader's terminal), on a
// fresh copy of the repository's files with the binaries in bin/ and bin/ on the PATH. A block
// fails its test when any of its commands fails (set -euo pipefail); the tests then check what the
// text says each block shows. A block the tests cannot run is preceded by
// <!-- docs-test: skip REASON --> and the text says why. Clusters a file starts are destroyed
// when its test ends.
package docs_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/cluster"
)

// repoRoot is the repository, relative to this package.
const repoRoot = "../.."

// blockTimeout bounds one block; the longest ones start a cluster or rotate a CA.
const blockTimeout = 3 * time.Minute

// skipMarker before a block keeps the tests from running it; the text says why.
const skipMarker = "<!-- docs-test: skip"

// block is one shell block of a document.
type block struct {
	// line is where the block starts in the file (1-based), for messages.
	line int
	text string
	// skip is the reason given by a skipMarker, "" for a block that runs.
	skip string
}

var fence = regexp.MustCompile("^```([a-z]*)\\s*$")

// parseBlocks returns the shell blocks (```sh, ```bash) of a markdown document in order.
func parseBlocks(doc string) ([]block, error) {
	var (
		out      []block
		current  *block
		lang     string
		previous string // the last non-empty line before the current block
	)

	for i, line := range strings.Split(doc, "\n") {
		m := fence.FindStringSubmatch(line)

		switch {
		case current == nil && m != nil && (m[1] == "sh" || m[1] == "bash"):
			current = &block{line: i + 1}
			lang = m[1]

			if reason, ok := strings.CutPrefix(previous, skipMarker); ok {
				current.skip = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(strings.TrimSuffix(reason, "-->")), ":"))
				if current.skip == "" {
					return nil, fmt.Errorf("line %d: %s without a reason", i, skipMarker)
				}
			}
		case current == nil && m != nil:
			// Another fenced block (yaml, plain text): skip to its end.
			current = &block{line: -1}
			lang = m[1]
		case current != nil && strings.TrimSpace(line) == "```":
			if current.line > 0 {
				out = append(out, *current)
			}

			current = nil
		case current != nil:
			current.text += line + "\n"
		}

		if current == nil && strings.TrimSpace(line) != "" && m == nil {
			previous = strings.TrimSpace(line)
		}
	}

	if current != nil {
		return nil, fmt.Errorf("the %s block at line %d is not closed", lang, current.line)
	}

	return out, nil
}

// session is one bash process running a document's blocks in order.
type session struct {
	t       *testing.T
	dir     string // the reader's working directory
	home    string
	scripts string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	lines   chan string
	exited  chan error
}

// newSession copies the repository to a fresh directory, puts the binaries in its bin/ and starts
// bash there.
func newSession(t *testing.T) *session {
	t.Helper()

	s := &session{t: t, dir: t.TempDir(), home: t.TempDir(), scripts: t.TempDir()}
	copyRepository(t, s.dir)

	require.NoError(t, os.MkdirAll(filepath.Join(s.dir, "bin"), 0o755))

	for _, name := range []string{"nodepkid", "nodepkictl"} {
		data, err := os.ReadFile(filepath.Join(binDir, name))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(s.dir, "bin", name), data, 0o755)) // an executable
	}

	reader, writer, err := os.Pipe()
	require.NoError(t, err)

	s.cmd = exec.Command("bash", "--norc", "--noprofile", "-s") //nolint:noctx // stopped by the cleanup below
	s.cmd.Dir = s.dir
	s.cmd.Env = sessionEnv(s.dir, s.home)
	s.cmd.Stdout, s.cmd.Stderr = writer, writer
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}

	s.stdin, err = s.cmd.StdinPipe()
	require.NoError(t, err)
	require.NoError(t, s.cmd.Start())
	require.NoError(t, writer.Close())

	s.lines = make(chan string, 1024)
	s.exited = make(chan error, 1)

	go func() {
		defer close(s.lines)

		scanner := bufio.NewScanner(reader)
		scanner.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)

		for scanner.Scan() {
			s.lines <- scanner.Text()
		}
	}()

	go func() { s.exited <- s.cmd.Wait() }()

	t.Cleanup(s.close)

	_, err = io.WriteString(s.stdin, "set -euo pipefail\n")
	require.NoError(t, err)

	return s
}

// sessionEnv is the reader's environment: a home of its own (no ~/.talos/config of the machine
// running the tests), bin/ first on the PATH, and Go's caches where they are, for `make build`.
func sessionEnv(dir, home string) []string {
	env := []string{
		"HOME=" + home,
		"PATH=" + filepath.Join(dir, "bin") + string(os.PathListSeparator) + os.Getenv("PATH"),
		"LANG=C.UTF-8",
	}

	for _, name := range []string{"GOCACHE", "GOMODCACHE", "GOPATH", "GOPROXY", "GOFLAGS", "GOTOOLCHAIN", "TMPDIR"} {
		if value := goEnv[name]; value != "" {
			env = append(env, name+"="+value)
		}
	}

	return env
}

const doneMarker = "__DOCS_TEST_BLOCK_DONE__"

// run runs one block and returns its output. The test fails if the block fails or takes longer
// than blockTimeout.
func (s *session) run(b block) string {
	s.t.Helper()

	script := filepath.Join(s.scripts, fmt.Sprintf("block-%04d.sh", b.line))
	require.NoError(s.t, os.WriteFile(script, []byte(b.text), 0o600))

	// The block reads no input of the session: a command that reads stdin would eat the script.
	_, err := fmt.Fprintf(s.stdin, "source %q </dev/null\necho %s\n", script, doneMarker)
	require.NoError(s.t, err)

	var out strings.Builder

	timeout := time.After(blockTimeout)

	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				err := <-s.exited
				s.exited <- err

				require.FailNow(s.t, fmt.Sprintf("the block at line %d failed (%v):\n%s\n--- output:\n%s", b.line, err, b.text, out.String()))
			}

			if line == doneMarker {
				return out.String()
			}

			out.WriteString(line + "\n")
		case <-timeout:
			require.FailNow(s.t, fmt.Sprintf("the block at line %d did not finish in %s:\n%s\n--- output:\n%s", b.line, blockTimeout, b.text, out.String()))
		}
	}
}

// close stops bash and whatever it left running in its process group, then destroys every local
// cluster under the reader's directory and home.
func (s *session) close() {
	_ = s.stdin.Close()

	// The shell's exit status says nothing here: it is closed, or killed when it does not exit.
	select {
	case err := <-s.exited:
		s.exited <- err
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		s.exited <- <-s.exited
	}

	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)

	for _, root := range []string{s.dir, s.home} {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cluster.yaml" {
				return nil //nolint:nilerr // a directory that vanished holds no cluster
			}

			c, err := cluster.Load(filepath.Dir(path))
			if err == nil {
				err = c.Destroy()
			}

			assert.NoError(s.t, err, "destroying the cluster in %s", filepath.Dir(path))

			return nil
		})
	}
}

// copyRepository copies the repository's tracked files (as they are in the working tree) to dir,
// as a fresh clone would have them.
func copyRepository(t *testing.T, dir string) {
	t.Helper()

	list, err := exec.Command("git", "-C", repoRoot, "ls-files", "-z").Output()
	require.NoError(t, err)

	for name := range strings.SplitSeq(strings.TrimSuffix(string(list), "\x00"), "\x00") {
		src := filepath.Join(repoRoot, name)

		info, err := os.Lstat(src)
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted in the working tree
		}

		require.NoError(t, err)

		if !info.Mode().IsRegular() {
			continue
		}

		data, err := os.ReadFile(src)
		require.NoError(t, err)

		dst := filepath.Join(dir, name)
		require.NoError(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		require.NoError(t, os.WriteFile(dst, data, info.Mode().Perm()))
	}
}

// check is what the text says a block shows, checked after the block ran; it applies to the
// one block that contains its key.
type check struct {
	key string
	fn  func(t *testing.T, dir, out string)
}

// runDocument runs every shell block of the file in order and applies the checks. Every check
// must find its block, and every block the tests cannot run must say why.
func runDocument(t *testing.T, file string, checks ...check) {
	t.Helper()

	doc, err := os.ReadFile(filepath.Join(repoRoot, file))
	require.NoError(t, err)

	blocks, err := parseBlocks(string(doc))
	require.NoError(t, err)
	require.NotEmpty(t, blocks, "%s has no shell block", file)

	for _, c := range checks {
		matches := 0

		for _, b := range blocks {
			if strings.Contains(b.text, c.key) {
				matches++
			}
		}

		require.Equal(t, 1, matches, "%s: the check %q must match exactly one block", file, c.key)
	}

	s := newSession(t)

	for _, b := range blocks {
		if b.skip != "" {
			t.Logf("%s:%d: not run: %s", file, b.line, b.skip)

			for _, c := range checks {
				require.NotContains(t, b.text, c.key, "%s:%d: a skipped block has a check", file, b.line)
			}

			continue
		}

		out := s.run(b)

		for _, c := range checks {
			if strings.Contains(b.text, c.key) {
				c.fn(t, s.dir, out)
			}
		}
	}
}

// assertMode checks that the files exist with the mode.
func assertMode(t *testing.T, dir string, mode os.FileMode, names ...string) {
	t.Helper()

	for _, name := range names {
		info, err := os.Stat(filepath.Join(dir, name))
		if assert.NoError(t, err, name) {
			assert.Equal(t, mode, info.Mode().Perm(), name)
		}
	}
}
