package pki

import (
	"encoding/json"
	"fmt"
	"time"

	"go.yaml.in/yaml/v4"
)

// Time is a time of a spec, with a resolution of one second. Its YAML and protobuf forms are the
// RFC 3339 UTC text ("" for the zero time), the form these fields had when they were strings, so
// scripts that read them and clients of other versions see no change.
type Time struct {
	time.Time
}

// NewTime returns t in UTC, truncated to the second and without a monotonic reading, so that equal
// times compare equal and an unchanged spec writes nothing.
func NewTime(t time.Time) Time {
	if t.IsZero() {
		return Time{}
	}

	return Time{t.UTC().Truncate(time.Second)}
}

// ParseTime parses the RFC 3339 form of a Time; "" is the zero time.
func ParseTime(s string) (Time, error) {
	if s == "" {
		return Time{}, nil
	}

	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return Time{}, fmt.Errorf("not an RFC 3339 time: %w", err)
	}

	return NewTime(t), nil
}

// String is the RFC 3339 UTC form, or "" for the zero time.
func (t Time) String() string {
	if t.IsZero() {
		return ""
	}

	return t.UTC().Format(time.RFC3339)
}

// MarshalYAML implements yaml.Marshaler.
func (t Time) MarshalYAML() (any, error) {
	return t.String(), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (t *Time) UnmarshalYAML(node *yaml.Node) error {
	var s string
	if err := node.Decode(&s); err != nil {
		return err
	}

	parsed, err := ParseTime(s)
	if err != nil {
		return err
	}

	*t = parsed

	return nil
}

// MarshalJSON implements json.Marshaler.
func (t Time) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, "%q", t.String()), nil
}

// MarshalBinary implements encoding.BinaryMarshaler: protobuf carries the text, as a string field would.
func (t Time) MarshalBinary() ([]byte, error) {
	return []byte(t.String()), nil
}

// UnmarshalBinary implements encoding.BinaryUnmarshaler.
func (t *Time) UnmarshalBinary(data []byte) error {
	parsed, err := ParseTime(string(data))
	if err != nil {
		return err
	}

	*t = parsed

	return nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}

	return t.UnmarshalText([]byte(s))
}

// MarshalText implements encoding.TextMarshaler.
func (t Time) MarshalText() ([]byte, error) {
	return []byte(t.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *Time) UnmarshalText(data []byte) error {
	return t.UnmarshalBinary(data)
}
