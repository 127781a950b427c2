package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"
)

// ReadLines reads the lines of one log file (name is for the warnings) and sends those of since
// or later (all when since is zero). A line that is not an event, such as a last line torn by a
// crash or one longer than MaxLineBytes, is sent as a warning and skipped; only an error of r or
// of send ends the read.
func ReadLines(r io.Reader, name string, since time.Time, send func(Line) error) error {
	br := bufio.NewReaderSize(r, MaxLineBytes+1)

	for number := 1; ; number++ {
		raw, err := br.ReadSlice('\n')

		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			if err = skipLine(br); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("error reading %s: %w", name, err)
			}

			if err = send(Line{Warning: fmt.Sprintf("%s line %d: skipped: longer than the %d bytes of an event", name, number, MaxLineBytes)}); err != nil {
				return err
			}

			continue
		case errors.Is(err, io.EOF):
			if len(raw) == 0 {
				return nil
			}
		case err != nil:
			return fmt.Errorf("error reading %s: %w", name, err)
		}

		raw = bytes.TrimSuffix(raw, []byte{'\n'})
		if len(bytes.TrimSpace(raw)) == 0 {
			continue
		}

		if err := sendLine(raw, name, number, since, send); err != nil {
			return err
		}
	}
}

// skipLine discards the rest of a line that overflowed the reader's buffer.
func skipLine(br *bufio.Reader) error {
	for {
		_, err := br.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}

func sendLine(raw []byte, name string, number int, since time.Time, send func(Line) error) error {
	e, err := ParseLine(raw)
	if err != nil {
		where := "a followed line"
		if name != "" {
			where = fmt.Sprintf("%s line %d", name, number)
		}

		return send(Line{Warning: fmt.Sprintf("%s: skipped (a line torn by a crash reads so): %v", where, err)})
	}

	if !since.IsZero() && e.Time.Before(since) {
		return nil
	}

	// raw points into the reader's buffer: the copy outlives the next read.
	return send(Line{Raw: bytes.Clone(raw), Event: e})
}
