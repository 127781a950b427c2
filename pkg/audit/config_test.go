package audit_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

func TestChangedPaths(t *testing.T) {
	t.Parallel()

	base := "version: v1alpha1\nmachine:\n  type: worker\n  token: abc\n  certSANs: [a]\ncluster:\n  clusterName: c\n"
	other := "---\napiVersion: v1alpha1\nkind: Extra\nname: x\nvalue: 1\n"

	for _, tc := range []struct {
		name          string
		before, after string
		want          []string
	}{
		{"nothing", base, base, []string{}},
		{"a list", base, strings.Replace(base, "[a]", "[a, b]", 1), []string{"machine.certSANs"}},
		{"a scalar", base, strings.Replace(base, "token: abc", "token: def", 1), []string{"machine.token"}},
		{"a field added", base, base + "  id: x\n", []string{"cluster.id"}},
		{"a section removed", base, "version: v1alpha1\nmachine:\n  type: worker\n  token: abc\n  certSANs: [a]\n", []string{"cluster"}},
		{"another document", base + other, base + strings.Replace(other, "value: 1", "value: 2", 1), []string{"(v1alpha1/Extra/x)value"}},
		{"a document added", base, base + other, []string{"(v1alpha1/Extra/x)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			got, err := audit.ChangedPaths([]byte(tc.before), []byte(tc.after))
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}

	_, err := audit.ChangedPaths([]byte("a: ["), []byte(base))
	require.ErrorContains(t, err, "the old config")
}

// rootConfig is a control-plane config with the given OS CA, accepted OS CAs, token and
// accepted tokens and revocations.
func rootConfig(t *testing.T, ca, caKey []byte, accepted [][]byte, token string, acceptedTokens []string, revoked string) *machineconfig.Config {
	t.Helper()

	var b strings.Builder

	fmt.Fprintf(&b, "version: v1alpha1\nmachine:\n  type: controlplane\n  token: %s\n", token)
	fmt.Fprintf(&b, "  ca:\n    crt: %s\n    key: %s\n", base64.StdEncoding.EncodeToString(ca), base64.StdEncoding.EncodeToString(caKey))

	if len(accepted) > 0 {
		b.WriteString("  acceptedCAs:\n")

		for _, a := range accepted {
			fmt.Fprintf(&b, "    - crt: %s\n", base64.StdEncoding.EncodeToString(a))
		}
	}

	if len(acceptedTokens) > 0 {
		fmt.Fprintf(&b, "  acceptedTokens: [%s]\n", strings.Join(acceptedTokens, ", "))
	}

	b.WriteString(revoked)

	cfg, err := machineconfig.Parse([]byte(b.String()))
	require.NoError(t, err)

	return cfg
}

func fingerprintOf(t *testing.T, crtPEM []byte) string {
	t.Helper()

	crt, err := certs.ParseCertificate(crtPEM)
	require.NoError(t, err)

	return certs.Fingerprint(crt)
}

// TestConfigEventsOfARotationAndARevocation: the steps of an OS CA rotation and of a join-token
// rotation, and a revocation, as a node sees them; no secret of either config is in any event.
func TestConfigEventsOfARotationAndARevocation(t *testing.T) {
	t.Parallel()

	oldCA, oldKey, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)
	newCA, newKey, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	oldFP, newFP := fingerprintOf(t, oldCA), fingerprintOf(t, newCA)
	caller := &audit.Caller{Subject: "O=os:admin", Roles: []string{"os:admin"}}
	revoked := "  revokedCertificates:\n    - fingerprint: " + strings.Repeat("ab", 32) + "\n      reason: laptop lost\n"

	start := rootConfig(t, oldCA, oldKey, nil, "oldtoken.0123456789abcdef", nil, "")

	for _, tc := range []struct {
		name      string
		after     *machineconfig.Config
		wantTypes []string
		wantRoots []audit.RootChange
		check     func(t *testing.T, events []audit.Event)
	}{
		{
			name:      "new CA accepted, new token accepted",
			after:     rootConfig(t, oldCA, oldKey, [][]byte{newCA}, "oldtoken.0123456789abcdef", []string{"newtoken.0123456789abcdef"}, ""),
			wantTypes: []string{audit.TypeConfigPatched, audit.TypeRotationStep},
			wantRoots: []audit.RootChange{
				{Root: audit.RootOS, Step: audit.StepAcceptedAdded, Fingerprints: []string{newFP}, Count: 1},
				{Root: audit.RootJoinToken, Step: audit.StepAcceptedAdded, Count: 1},
			},
		},
		{
			name:      "issuing CA and token changed",
			after:     rootConfig(t, newCA, newKey, [][]byte{oldCA}, "newtoken.0123456789abcdef", nil, ""),
			wantTypes: []string{audit.TypeConfigPatched, audit.TypeRotationStep},
			wantRoots: []audit.RootChange{
				{Root: audit.RootOS, Step: audit.StepIssuingChanged, From: oldFP, To: newFP},
				{Root: audit.RootOS, Step: audit.StepAcceptedAdded, Fingerprints: []string{oldFP}, Count: 1},
				{Root: audit.RootJoinToken, Step: audit.StepIssuingChanged},
			},
		},
		{
			name:      "revocation",
			after:     rootConfig(t, oldCA, oldKey, nil, "oldtoken.0123456789abcdef", nil, revoked),
			wantTypes: []string{audit.TypeConfigPatched, audit.TypeRevocationAdded},
			check: func(t *testing.T, events []audit.Event) {
				t.Helper()
				require.Len(t, events[1].Revocations, 1)
				assert.Equal(t, strings.Repeat("ab", 32), events[1].Revocations[0].Fingerprint)
				assert.Equal(t, "laptop lost", events[1].Revocations[0].Reason)
				assert.Equal(t, []string{"machine.revokedCertificates"}, events[0].Changed)
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			events, err := audit.ConfigEvents(audit.TypeConfigPatched, caller, start, tc.after)
			require.NoError(t, err)

			var types []string
			for _, e := range events {
				types = append(types, e.Type)
				assert.Equal(t, caller, e.Caller)
			}

			assert.Equal(t, tc.wantTypes, types)

			if tc.wantRoots != nil {
				assert.Equal(t, tc.wantRoots, events[len(events)-1].Roots)
			}

			if tc.check != nil {
				tc.check(t, events)
			}

			data, err := json.Marshal(events)
			require.NoError(t, err)

			for _, secret := range []string{
				"-----BEGIN", "oldtoken", "newtoken", string(oldKey), base64.StdEncoding.EncodeToString(oldKey)[:40],
				base64.StdEncoding.EncodeToString(newKey)[:40], base64.StdEncoding.EncodeToString(oldCA)[:40],
			} {
				assert.NotContains(t, string(data), secret)
			}
		})
	}
}
