package process

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParsePIDFile(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		data   string
		pid    int
		digest string
		ok     bool
	}{
		{"1234\nabcd\n", 1234, "abcd", true},
		{"1234\n", 1234, "", true},
		{" 99 \n", 99, "", true},
		{"", 0, "", false},
		{"1\n", 0, "", false},
		{"-5\n", 0, "", false},
		{"sleep\n", 0, "", false},
	} {
		pid, digest, ok := parsePIDFile([]byte(tc.data))
		assert.Equal(t, tc.ok, ok, "%q", tc.data)
		assert.Equal(t, tc.pid, pid, "%q", tc.data)
		assert.Equal(t, tc.digest, digest, "%q", tc.data)
	}
}

func FuzzParsePIDFile(f *testing.F) {
	f.Add([]byte("1234\nabcd\n"))
	f.Add([]byte(""))
	f.Add([]byte("\n\n\n"))

	f.Fuzz(func(t *testing.T, data []byte) {
		pid, digest, ok := parsePIDFile(data)
		if ok && pid <= 1 {
			t.Fatalf("accepted pid %d", pid)
		}

		if !ok && (pid != 0 || digest != "") {
			t.Fatalf("refused but returned %d %q", pid, digest)
		}
	})
}

func TestLastLogLine(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()

	for _, tc := range []struct {
		log, want string
	}{
		{
			`{"level":"info","msg":"ok"}` + "\n" + `{"level":"fatal","msg":"discovery failed","error":"listen tcp: bind: address already in use"}` + "\n",
			"discovery failed: listen tcp: bind: address already in use",
		},
		{"plain text\nlast line\n", "last line"},
		{"", ""},
	} {
		path := filepath.Join(dir, "program.log")
		require.NoError(t, os.WriteFile(path, []byte(tc.log), 0o600))
		assert.Equal(t, tc.want, LastLogLine(path))
	}

	assert.Empty(t, LastLogLine(filepath.Join(dir, "missing.log")))
}

func TestAdoptNeedsTheMarker(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	cfg := Config{Name: "test", PIDFile: filepath.Join(dir, "test.pid"), Marker: "--data-dir=" + dir}

	// This test process is running, but it does not carry the marker.
	require.NoError(t, os.WriteFile(cfg.PIDFile, []byte(strconv.Itoa(os.Getpid())+"\nabcd\n"), 0o600))

	proc, err := Adopt(cfg)
	require.NoError(t, err)
	assert.Nil(t, proc)
	assert.NoFileExists(t, cfg.PIDFile, "a stale pidfile is removed")
}

func TestStartAdoptStop(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	// sh keeps the marker among its arguments; its sleep is killed with the process group.
	cfg := Config{
		Name: "sh", Binary: "/bin/sh", Args: []string{"-c", "sleep 60; true", "--marker=" + dir}, Marker: "--marker=" + dir,
		LogFile: filepath.Join(dir, "sh.log"), PIDFile: filepath.Join(dir, "sh.pid"),
	}

	started, err := Start(cfg, "digest-1")
	require.NoError(t, err)

	adopted, err := Adopt(cfg)
	require.NoError(t, err)
	require.NotNil(t, adopted)
	assert.Equal(t, started.PID, adopted.PID)
	assert.Equal(t, "digest-1", adopted.Tag)

	require.NoError(t, adopted.Stop(t.Context(), 0))
	<-started.Exited()
	assert.Error(t, started.Err(), "killed")
}
