package pki

// parseMemo remembers, for one controller instance, what it parsed from PEM in its previous round
// (one pass over the machine config, or one root's pool), keyed by the PEM itself. A config change
// almost always keeps the CAs and keys it had (only the rotation step that adds one brings a new
// one), so the next round finds them here instead of parsing them again. Each round keeps only
// what it used, so the memo never holds more than one round's input; a failed parse is not kept.
// The parsed values are shared between rounds and must only be read.
//
// A memo is not safe for concurrent use: its owner calls it from one pass at a time.
type parseMemo[D ~string | ~[]byte, V any] struct {
	previous, current map[string]V
}

// parse returns what parse gives for data, reusing the result of this round or the previous one.
func (m *parseMemo[D, V]) parse(data D, parse func(D) (V, error)) (V, error) {
	v, ok := m.current[string(data)]
	if !ok {
		v, ok = m.previous[string(data)]
	}

	if !ok {
		var err error

		if v, err = parse(data); err != nil {
			return v, err
		}
	}

	if m.current == nil {
		m.current = map[string]V{}
	}

	m.current[string(data)] = v

	return v, nil
}

// endRound forgets whatever this round did not use.
func (m *parseMemo[D, V]) endRound() {
	m.previous, m.current = m.current, nil
}
