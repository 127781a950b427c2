package pki

import (
	"errors"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

func TestParseMemo(t *testing.T) {
	t.Parallel()

	var memo parseMemo[string, string]

	parsed := 0
	parse := func(data string) (string, error) {
		parsed++

		if data == "bad" {
			return "", errors.New("bad input")
		}

		return "parsed " + data, nil
	}

	for _, tc := range []struct {
		name       string
		round      []string
		wantParsed int
		wantKept   int
	}{
		{"first round parses each input once", []string{"a", "b", "a"}, 2, 2},
		{"next round reuses what it keeps", []string{"b", "a"}, 0, 2},
		{"a new input is parsed", []string{"a", "c"}, 1, 2},
		{"an input left out for a round is forgotten", []string{"b"}, 1, 1},
		{"a failure is not remembered", []string{"bad", "bad"}, 2, 0},
	} {
		parsed = 0

		for _, data := range tc.round {
			got, err := memo.parse(data, parse)
			if data == "bad" {
				require.Error(t, err, tc.name)

				continue
			}

			require.NoError(t, err, tc.name)
			require.Equal(t, "parsed "+data, got, tc.name)
		}

		memo.endRound()

		require.Equal(t, tc.wantParsed, parsed, tc.name)
		require.Len(t, memo.previous, tc.wantKept, tc.name)
	}
}

// TestTrustPoolsLikeUncached checks that the pools a controller's poolParser builds through a
// rotation (accept, switch, retire, a bad CA, a key change) always equal the pools built afresh,
// and that it keeps no more than the current config's CAs and keys.
func TestTrustPoolsLikeUncached(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	next := ctest.NewCA(t, certs.RootOS)

	nextKey, err := certs.NewServiceAccountKey()
	require.NoError(t, err)

	steps := []struct {
		name string
		edit func(doc *machineconfig.Document)
	}{
		{"initial", func(*machineconfig.Document) {}},
		{"accept", func(doc *machineconfig.Document) {
			doc.Machine.AcceptedCAs = []*machineconfig.Certificate{next.Accepted()}
			doc.Cluster.AcceptedServiceAccountKeys = []*machineconfig.Key{{Key: nextKey}}
		}},
		{"switch", func(doc *machineconfig.Document) {
			doc.Machine.AcceptedCAs = []*machineconfig.Certificate{s.OS.Accepted()}
			doc.Machine.CA = next.Pair()
			doc.Cluster.AcceptedServiceAccountKeys = []*machineconfig.Key{{Key: s.ServiceAccount}}
			doc.Cluster.ServiceAccount = &machineconfig.Key{Key: nextKey}
		}},
		{"issuing certificate followed by its key", func(doc *machineconfig.Document) {
			doc.Machine.CA = &machineconfig.CertificateAndKey{Crt: append(slices.Clone(next.Crt), next.Key...), Key: next.Key}
			doc.Machine.AcceptedCAs = []*machineconfig.Certificate{s.OS.Accepted()}
		}},
		{"bad accepted CA", func(doc *machineconfig.Document) {
			doc.Machine.CA = next.Pair()
			doc.Machine.AcceptedCAs = []*machineconfig.Certificate{{Crt: []byte("not a certificate")}}
		}},
		{"retire", func(doc *machineconfig.Document) {
			doc.Machine.CA = next.Pair()
			doc.Cluster.ServiceAccount = &machineconfig.Key{Key: nextKey}
		}},
	}

	parser := &poolParser{}

	for _, step := range steps {
		doc := ctest.ControlPlane(s)
		step.edit(doc)

		got, gotErr := trustPools(doc, parser)
		want, wantErr := trustPools(doc, &poolParser{})

		require.Equal(t, wantErr, gotErr, step.name)
		require.Equal(t, step.name == "bad accepted CA", gotErr != nil, step.name)

		if wantErr != nil {
			continue
		}

		require.Len(t, got, len(want), step.name)

		entries := 0

		for root, p := range want {
			require.Equal(t, p.spec(), got[root].spec(), "%s: %s", step.name, root)

			entries += len(p.entries)
		}

		kept := len(parser.certificates.previous) + len(parser.keys.previous)
		require.LessOrEqual(t, kept, entries, "%s: the memo keeps only the config's CAs and keys", step.name)
	}
}
