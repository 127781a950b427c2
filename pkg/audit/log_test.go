package audit_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/audit"
)

// clock is a settable clock for the log.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()

	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()

	c.now = c.now.Add(d)
}

func openLog(t *testing.T, dir string, c *clock, maxSize int64, maxFiles int) *audit.Log {
	t.Helper()

	l, err := audit.Open(audit.Options{Dir: dir, Node: "127.0.130.2", Clock: c.Now, MaxSize: maxSize, MaxFiles: maxFiles})
	require.NoError(t, err)

	t.Cleanup(func() { l.Close() })

	return l
}

// readAll streams the whole log and returns its events and warnings.
func readAll(t *testing.T, l *audit.Log, since time.Time) (events []audit.Event, warnings []string) {
	t.Helper()

	require.NoError(t, l.Stream(nil, since, false, func(line audit.Line) error {
		if line.Warning != "" {
			warnings = append(warnings, line.Warning)
		} else {
			events = append(events, line.Event)
		}

		return nil
	}))

	return events, warnings
}

func TestRecordWritesPrivateSyncedLines(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	c := &clock{now: time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC)}
	l := openLog(t, dir, c, 0, 0)

	require.NoError(t, l.Record(audit.Event{Type: audit.TypeConfigPatched, Caller: &audit.Caller{Subject: "O=os:admin", Roles: []string{"os:admin"}}, Changed: []string{"machine.certSANs"}}))

	info, err := os.Stat(filepath.Join(dir, audit.FileName))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	data, err := os.ReadFile(filepath.Join(dir, audit.FileName))
	require.NoError(t, err)
	assert.Equal(t, 1, bytes.Count(data, []byte("\n")), "one line per event")

	e, err := audit.ParseLine(bytes.TrimSuffix(data, []byte("\n")))
	require.NoError(t, err)
	assert.Equal(t, c.Now(), e.Time, "time from the injected clock")
	assert.Equal(t, "127.0.130.2", e.Node)
	assert.Equal(t, []string{"machine.certSANs"}, e.Changed)
}

func TestOpenMakesAnExistingLogPrivate(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	path := filepath.Join(dir, audit.FileName)
	require.NoError(t, os.WriteFile(path, nil, 0o644))
	require.NoError(t, os.Chmod(path, 0o644))

	openLog(t, dir, &clock{now: time.Now()}, 0, 0)

	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
}

func TestRotationKeepsABoundedNumberOfFiles(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	c := &clock{now: time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC)}
	l := openLog(t, dir, c, 1024, 3)

	const events = 100

	for i := range events {
		c.Add(time.Second)
		require.NoError(t, l.Record(audit.Event{Type: audit.TypeClientIssued, Certificate: &audit.Certificate{Serial: fmt.Sprintf("%04d", i)}}))
	}

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)

	var names []string
	for _, e := range entries {
		names = append(names, e.Name())

		info, err := e.Info()
		require.NoError(t, err)
		assert.LessOrEqual(t, info.Size(), int64(1024), e.Name())
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), e.Name())
	}

	assert.Equal(t, []string{"audit.log", "audit.log.1", "audit.log.2"}, names)

	// What is kept is the newest events, in order, without a gap.
	got, warnings := readAll(t, l, time.Time{})
	assert.Empty(t, warnings)
	require.NotEmpty(t, got)
	assert.Less(t, len(got), events, "the oldest files were dropped")

	for i, e := range got {
		assert.Equal(t, fmt.Sprintf("%04d", events-len(got)+i), e.Certificate.Serial)
	}

	// --since
	since := c.Now().Add(-4 * time.Second)
	recent, _ := readAll(t, l, since)
	assert.Len(t, recent, 5)
}

// TestTornLastLine: a node killed while writing leaves a torn last line; the next start ends it
// and goes on, and readers skip it with a warning that names the file and line.
func TestTornLastLine(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	c := &clock{now: time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC)}

	l, err := audit.Open(audit.Options{Dir: dir, Clock: c.Now})
	require.NoError(t, err)
	require.NoError(t, l.Record(audit.Event{Type: audit.TypeConfigPatched}))
	require.NoError(t, l.Close())

	path := filepath.Join(dir, audit.FileName)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	_, err = f.WriteString(`{"time":"2026-11-29T19:00:01Z","type":"config.pat`)
	require.NoError(t, err)
	require.NoError(t, f.Close())

	// A reader of the file as the crash left it.
	var warnings []string

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, audit.ReadLines(bytes.NewReader(data), audit.FileName, time.Time{}, func(line audit.Line) error {
		if line.Warning != "" {
			warnings = append(warnings, line.Warning)
		}

		return nil
	}))
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "audit.log line 2")

	// The restarted node.
	l = openLog(t, dir, c, 0, 0)
	require.NoError(t, l.Record(audit.Event{Type: audit.TypeClientIssued}))

	events, warnings := readAll(t, l, time.Time{})
	require.Len(t, events, 2)
	assert.Equal(t, audit.TypeConfigPatched, events[0].Type)
	assert.Equal(t, audit.TypeClientIssued, events[1].Type)
	require.Len(t, warnings, 1)
	assert.Contains(t, warnings[0], "audit.log line 2: skipped")
}

func TestLongLineIsSkipped(t *testing.T) {
	t.Parallel()

	input := strings.Repeat("x", audit.MaxLineBytes+10) + "\n" + `{"time":"2026-11-29T19:00:01Z","type":"refused"}` + "\n"

	var events, warnings int

	require.NoError(t, audit.ReadLines(strings.NewReader(input), "audit.log", time.Time{}, func(line audit.Line) error {
		if line.Warning != "" {
			warnings++
		} else {
			events++
		}

		return nil
	}))
	assert.Equal(t, 1, events)
	assert.Equal(t, 1, warnings)
}

// TestConcurrentWriters: events written from many goroutines at once, across rotations, are
// whole lines, each exactly once.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	l := openLog(t, dir, &clock{now: time.Date(2026, 11, 29, 19, 0, 0, 0, time.UTC)}, 64<<10, 50)

	const writers, each = 8, 50

	var wg sync.WaitGroup

	for w := range writers {
		wg.Go(func() {
			for i := range each {
				assert.NoError(t, l.Record(audit.Event{Type: audit.TypeClientIssued, Certificate: &audit.Certificate{Serial: fmt.Sprintf("%d-%d", w, i)}}))
			}
		})
	}

	wg.Wait()

	events, warnings := readAll(t, l, time.Time{})
	assert.Empty(t, warnings)
	require.Len(t, events, writers*each)

	seen := map[string]bool{}
	for _, e := range events {
		seen[e.Certificate.Serial] = true
	}

	assert.Len(t, seen, writers*each)
}

// TestFollow: a follower gets the stored events, then each new one; Close ends its stream.
func TestFollow(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	l, err := audit.Open(audit.Options{Dir: dir, Clock: time.Now})
	require.NoError(t, err)
	require.NoError(t, l.Record(audit.Event{Type: audit.TypeConfigApplied}))

	got := make(chan audit.Event, 10)
	ended := make(chan error, 1)

	go func() {
		ended <- l.Stream(make(chan struct{}), time.Time{}, true, func(line audit.Line) error {
			got <- line.Event

			return nil
		})
	}()

	assert.Equal(t, audit.TypeConfigApplied, (<-got).Type)

	// The follower is registered once the stored events are sent; a new event reaches it.
	require.NoError(t, l.Record(audit.Event{Type: audit.TypeTrustdSigned}))
	assert.Equal(t, audit.TypeTrustdSigned, (<-got).Type)

	require.NoError(t, l.Close())
	require.NoError(t, <-ended)
}

func TestOpenRefusesBadOptions(t *testing.T) {
	t.Parallel()

	_, err := audit.Open(audit.Options{})
	require.ErrorContains(t, err, "Dir is required")

	_, err = audit.Open(audit.Options{Dir: t.TempDir(), MaxFiles: 1})
	require.ErrorContains(t, err, "MaxFiles 1 at least 2")

	_, err = audit.Open(audit.Options{Dir: filepath.Join(t.TempDir(), "missing")})
	require.ErrorContains(t, err, "error opening the audit log")
}
