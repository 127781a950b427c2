package audit_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/nodepki/nodepki/pkg/audit"
)

// FuzzParseLine: no line makes the parser panic, and a line it accepts encodes to a line that
// parses to the same event.
func FuzzParseLine(f *testing.F) {
	f.Add([]byte(`{"time":"2026-11-29T19:00:00Z","type":"config.patched","caller":{"subject":"O=os:admin","roles":["os:admin"]},"changed":["machine.certSANs"]}`))
	f.Add([]byte(`{"time":"2026-11-29T19:00:00Z","type":"refused","refusal":{"service":"api","peer":"127.0.0.1","count":3,"window":"2026-11-29T19:00:00Z"}}`))
	f.Add([]byte(`{"time":"2026-11-29T19:00:00Z","type":"config.pat`))
	f.Add([]byte(`{"time":"2026-11-29T19:00:00Z","type":"x"}]`))
	f.Add([]byte(``))

	f.Fuzz(func(t *testing.T, line []byte) {
		e, err := audit.ParseLine(line)
		if err != nil {
			return
		}

		encoded, err := audit.Marshal(e)
		if err != nil {
			// An accepted line can hold more than MaxLineBytes once re-encoded (escapes).
			return
		}

		again, err := audit.ParseLine(encoded)
		if err != nil {
			t.Fatalf("a re-encoded event does not parse: %v\n%s", err, encoded)
		}

		reencoded, err := audit.Marshal(again)
		if err != nil || !bytes.Equal(encoded, reencoded) {
			t.Fatalf("an event does not survive a round trip:\n%s\n%s", encoded, reencoded)
		}
	})
}

// FuzzReadLines: any file content is read to its end without an error: lines that are not events
// become warnings.
func FuzzReadLines(f *testing.F) {
	f.Add([]byte("{\"time\":\"2026-11-29T19:00:00Z\",\"type\":\"refused\"}\n{\"time\":\"2026-11-29T19:00:0"))
	f.Add([]byte("\n\n\x00"))

	f.Fuzz(func(t *testing.T, data []byte) {
		err := audit.ReadLines(bytes.NewReader(data), "audit.log", time.Time{}, func(audit.Line) error { return nil })
		if err != nil {
			t.Fatalf("reading a file failed: %v", err)
		}
	})
}
