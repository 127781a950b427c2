package audit

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
)

// FileName is the active audit log file in the state directory; rotated files add .1 (newest)
// to .N.
const FileName = "audit.log"

// Defaults of Options.
const (
	DefaultMaxSize  = 8 << 20
	DefaultMaxFiles = 5
	// followBuffer is how many events a follower may lag behind before its stream is ended.
	followBuffer = 1024
)

// ErrFollowerBehind ends a follow stream whose reader did not keep up with the events.
var ErrFollowerBehind = errors.New("the audit log reader fell behind the events written: read again (with --since)")

// Options configure a Log.
type Options struct {
	// Dir is the directory of audit.log (the node's state directory). It must exist.
	Dir string
	// Node is written into every event (the node's address).
	Node string
	// MaxSize is the size past which audit.log is rotated (DefaultMaxSize when 0).
	MaxSize int64
	// MaxFiles bounds audit.log and its rotated files together (DefaultMaxFiles when 0, at
	// least 2); the oldest file is removed when a rotation would make more.
	MaxFiles int
	// Clock is time.Now unless set.
	Clock func() time.Time
	// Logger receives the warnings (a torn last line, a failed write); nil discards them.
	Logger *zap.Logger
}

// Log appends events to audit.log. It is safe for concurrent use; each event is one write of a
// whole line followed by an fsync, so a crash loses at most the line being written.
type Log struct {
	opts   Options
	logger *zap.Logger

	mu        sync.Mutex
	file      *os.File
	size      int64
	followers map[*follower]struct{}
	closed    bool

	refusals refusals
}

// Open opens (or creates, 0600) <dir>/audit.log for appending. A last line torn by a crash is
// ended with a newline, so that the next event starts a line of its own; readers skip the torn
// line with a warning.
func Open(opts Options) (*Log, error) {
	if opts.Dir == "" {
		return nil, errors.New("audit: Options.Dir is required")
	}

	if opts.MaxSize == 0 {
		opts.MaxSize = DefaultMaxSize
	}

	if opts.MaxFiles == 0 {
		opts.MaxFiles = DefaultMaxFiles
	}

	if opts.MaxSize < 0 || opts.MaxFiles < 2 {
		return nil, fmt.Errorf("audit: MaxSize %d must be positive and MaxFiles %d at least 2", opts.MaxSize, opts.MaxFiles)
	}

	if opts.Clock == nil {
		opts.Clock = time.Now
	}

	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}

	l := &Log{opts: opts, logger: logger, followers: map[*follower]struct{}{}}
	l.refusals.init()

	if err := l.openActive(); err != nil {
		return nil, err
	}

	return l, nil
}

func (l *Log) path(index int) string {
	if index == 0 {
		return filepath.Join(l.opts.Dir, FileName)
	}

	return filepath.Join(l.opts.Dir, FileName+"."+strconv.Itoa(index))
}

// openActive opens audit.log, repairs a torn last line and checks the mode.
func (l *Log) openActive() error {
	f, err := os.OpenFile(l.path(0), os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("error opening the audit log: %w", err)
	}

	// A log created by an older umask or copied in is made private again.
	if err = f.Chmod(0o600); err != nil {
		f.Close()

		return fmt.Errorf("error making the audit log 0600: %w", err)
	}

	info, err := f.Stat()
	if err != nil {
		f.Close()

		return fmt.Errorf("error reading the audit log: %w", err)
	}

	size := info.Size()

	if size > 0 {
		last := make([]byte, 1)
		if _, err = f.ReadAt(last, size-1); err != nil {
			f.Close()

			return fmt.Errorf("error reading the audit log: %w", err)
		}

		if last[0] != '\n' {
			l.logger.Warn("the last line of the audit log is incomplete (the node stopped while writing it): it is kept and skipped by readers",
				zap.String("file", l.path(0)))

			if _, err = f.Write([]byte{'\n'}); err != nil {
				f.Close()

				return fmt.Errorf("error ending the torn line of the audit log: %w", err)
			}

			size++
		}
	}

	l.file, l.size = f, size

	return syncDir(l.opts.Dir)
}

// Record appends e, with Time (if unset) and Node filled in, and syncs it to disk.
func (l *Log) Record(e Event) error {
	if e.Time.IsZero() {
		e.Time = l.opts.Clock()
	}

	e.Time = e.Time.UTC()

	if e.Node == "" {
		e.Node = l.opts.Node
	}

	line, err := Marshal(e)
	if err != nil {
		return err
	}

	l.mu.Lock()
	defer l.mu.Unlock()

	return l.appendLocked(line)
}

func (l *Log) appendLocked(line []byte) error {
	if l.closed {
		return errors.New("the audit log is closed")
	}

	record := make([]byte, 0, len(line)+1)
	record = append(append(record, line...), '\n')

	if l.size > 0 && l.size+int64(len(record)) > l.opts.MaxSize {
		if err := l.rotateLocked(); err != nil {
			return err
		}
	}

	n, err := l.file.Write(record)
	l.size += int64(n)

	if err != nil {
		return fmt.Errorf("error writing the audit log: %w", err)
	}

	if err = l.file.Sync(); err != nil {
		return fmt.Errorf("error syncing the audit log: %w", err)
	}

	for f := range l.followers {
		select {
		case f.lines <- line:
		default:
			// A follower that does not keep up is ended rather than let it hold back writers.
			delete(l.followers, f)
			close(f.lines)
			f.behind = true
		}
	}

	return nil
}

// rotateLocked shifts audit.log.i to audit.log.i+1 (dropping the oldest) and starts a new audit.log.
func (l *Log) rotateLocked() error {
	if err := l.file.Close(); err != nil {
		return fmt.Errorf("error closing the audit log for rotation: %w", err)
	}

	oldest := l.opts.MaxFiles - 1
	if err := os.Remove(l.path(oldest)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("error removing the oldest audit log: %w", err)
	}

	for i := oldest - 1; i >= 0; i-- {
		if err := os.Rename(l.path(i), l.path(i+1)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("error rotating the audit log: %w", err)
		}
	}

	return l.openActive()
}

// Close flushes the pending refusal counts and closes the file. Followers' streams end.
func (l *Log) Close() error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()

	if closed {
		return nil
	}

	flushErr := l.FlushRefusals(time.Time{})

	l.mu.Lock()
	defer l.mu.Unlock()

	if l.closed {
		return flushErr
	}

	l.closed = true

	for f := range l.followers {
		delete(l.followers, f)
		close(f.lines)
	}

	return errors.Join(flushErr, l.file.Close())
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("error opening the audit log directory: %w", err)
	}

	defer d.Close()

	if err = d.Sync(); err != nil {
		return fmt.Errorf("error syncing the audit log directory: %w", err)
	}

	return nil
}

// follower receives the lines written after its snapshot.
type follower struct {
	lines chan []byte
	// behind is set (under Log.mu, before lines is closed) when it was dropped for lagging.
	behind bool
}

// snapshot is the files of the log at one instant, oldest first, the active one read up to the
// size it had then; with follow, the lines written after that instant arrive on follower.
type snapshot struct {
	files  []*os.File
	names  []string
	limits []int64 // -1: whole file
	follow *follower
}

func (l *Log) snapshot(follow bool) (*snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()

	if l.closed {
		return nil, errors.New("the audit log is closed")
	}

	s := &snapshot{}

	// Opened under the lock: a rotation after it renames the files, but open files keep their content.
	for i := l.opts.MaxFiles - 1; i >= 0; i-- {
		f, err := os.Open(l.path(i))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}

		if err != nil {
			s.close()

			return nil, fmt.Errorf("error opening %s: %w", filepath.Base(l.path(i)), err)
		}

		limit := int64(-1)
		if i == 0 {
			limit = l.size
		}

		s.files, s.names, s.limits = append(s.files, f), append(s.names, filepath.Base(l.path(i))), append(s.limits, limit)
	}

	if follow {
		s.follow = &follower{lines: make(chan []byte, followBuffer)}
		l.followers[s.follow] = struct{}{}
	}

	return s, nil
}

func (s *snapshot) close() {
	for _, f := range s.files {
		f.Close()
	}
}

func (l *Log) unfollow(f *follower) {
	l.mu.Lock()
	defer l.mu.Unlock()

	if _, ok := l.followers[f]; ok {
		delete(l.followers, f)
		close(f.lines)
	}
}

// Line is what a reader gets for one stored line: the event and its line as stored, or, for a
// line that is not an event, a warning saying where it is and why it was skipped.
type Line struct {
	Raw     []byte
	Event   Event
	Warning string
}

// Stream sends the stored events from since on (all when since is zero), oldest first, then with
// follow every event written afterwards, until done is closed or send fails. A line that is not an
// event is sent as a warning and skipped.
func (l *Log) Stream(done <-chan struct{}, since time.Time, follow bool, send func(Line) error) error {
	s, err := l.snapshot(follow)
	if err != nil {
		return err
	}

	defer s.close()

	if s.follow != nil {
		defer l.unfollow(s.follow)
	}

	for i, f := range s.files {
		var r io.Reader = f
		if s.limits[i] >= 0 {
			r = io.LimitReader(f, s.limits[i])
		}

		if err = ReadLines(r, s.names[i], since, send); err != nil {
			return err
		}
	}

	if s.follow == nil {
		return nil
	}

	for {
		select {
		case <-done:
			return nil
		case raw, ok := <-s.follow.lines:
			if !ok {
				l.mu.Lock()
				behind := s.follow.behind
				l.mu.Unlock()

				if behind {
					return ErrFollowerBehind
				}

				return nil
			}

			if err = sendLine(raw, "", 0, since, send); err != nil {
				return err
			}
		}
	}
}
