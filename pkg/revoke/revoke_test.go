package revoke_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/pkg/revoke"
	"github.com/nodepki/nodepki/pkg/rotate"
	"github.com/nodepki/nodepki/resources/pki"
)

// fakeCluster keeps each node's config, patched with the real machineconfig code; a node
// enforces the list of its config, and refuses a probe with a certificate it denies.
type fakeCluster struct {
	rotate.Cluster // calls revoke does not make panic

	ca      *certs.CA
	configs map[string][]byte
	down    map[string]bool
	applies int
}

func (f *fakeCluster) UseCredentials(context.Context, []rotate.Credentials) error { return nil }

func (f *fakeCluster) Members(context.Context, string) ([]rotate.Member, error) {
	var out []rotate.Member
	for node := range f.configs {
		out = append(out, rotate.Member{Address: node, LastSeen: time.Now()})
	}

	return out, nil
}

func (f *fakeCluster) reach(node string) error {
	if f.down[node] {
		return status.Error(codes.Unavailable, "connection refused")
	}

	return nil
}

func (f *fakeCluster) AcceptedCAs(_ context.Context, node string) (map[rotate.Root]pki.AcceptedCASpec, error) {
	if err := f.reach(node); err != nil {
		return nil, err
	}

	return map[rotate.Root]pki.AcceptedCASpec{rotate.RootOS: {Certificates: []string{string(f.ca.CrtPEM)}}}, nil
}

func (f *fakeCluster) MachineConfig(_ context.Context, node string) ([]byte, error) {
	if err := f.reach(node); err != nil {
		return nil, err
	}

	return f.configs[node], nil
}

func (f *fakeCluster) ApplyPatches(_ context.Context, node string, patches [][]byte) error {
	if err := f.reach(node); err != nil {
		return err
	}

	cfg, err := machineconfig.Parse(f.configs[node])
	if err != nil {
		return err
	}

	for _, p := range patches {
		patch, err := machineconfig.LoadPatch(p)
		if err != nil {
			return err
		}

		if cfg, err = machineconfig.Apply(cfg, patch); err != nil {
			return err
		}
	}

	if err = cfg.Validate(); err != nil {
		return err
	}

	f.applies++
	f.configs[node], err = cfg.Bytes()

	return err
}

func (f *fakeCluster) Revocations(_ context.Context, node string) ([]revocation.Entry, error) {
	cfg, err := machineconfig.Parse(f.configs[node])
	if err != nil {
		return nil, err
	}

	return cfg.Document().Machine.RevokedCertificates, nil
}

func (f *fakeCluster) Probe(ctx context.Context, node string, creds rotate.Credentials, _ bool) error {
	list, err := f.Revocations(ctx, node)
	if err != nil {
		return err
	}

	crt, err := certs.ParseCertificate(creds.Crt)
	if err != nil {
		return err
	}

	if _, denied := revocation.NewList(list).Denied([]*x509.Certificate{crt, f.ca.Crt}); denied {
		return status.Error(codes.Unauthenticated, "has been revoked")
	}

	return nil
}

func newFake(t *testing.T, nodes ...string) *fakeCluster {
	t.Helper()

	b, err := bundle.Generate()
	require.NoError(t, err)

	cp, _, err := generate.Generate(generate.Input{ClusterName: "test", Endpoint: "https://10.0.0.1:6443", Bundle: b})
	require.NoError(t, err)

	raw, err := cp.Bytes()
	require.NoError(t, err)

	ca, err := certs.LoadCA(b.Certs.OS.Crt, b.Certs.OS.Key)
	require.NoError(t, err)

	f := &fakeCluster{ca: ca, configs: map[string][]byte{}, down: map[string]bool{}}
	for _, n := range nodes {
		f.configs[n] = raw
	}

	return f
}

func (f *fakeCluster) credentials(t *testing.T, name string) rotate.Credentials {
	t.Helper()

	crt, key, err := f.ca.Issue(certs.ClientProfile([]string{"os:reader"}, time.Hour), time.Now())
	require.NoError(t, err)

	return rotate.Credentials{Name: name, CA: f.ca.CrtPEM, Crt: crt, Key: key}
}

func TestRun(t *testing.T) {
	t.Parallel()

	nodes := []string{"10.0.0.1", "10.0.0.2", "10.0.0.3"}

	tests := []struct {
		name      string
		self      bool
		force     bool
		down      string
		wantErr   string
		wantOut   []string
		wantApply int
	}{
		{name: "every node", wantOut: []string{"10.0.0.1: revoked, enforced", "10.0.0.3: revoked, enforced", "revokedCertificates:"}, wantApply: 3},
		{name: "a node down is reported", down: "10.0.0.2", wantErr: "1 of 3 nodes did not take the change: 10.0.0.2", wantOut: []string{"10.0.0.2: FAILED"}, wantApply: 2},
		{name: "own credential refused", self: true, wantErr: "connected with", wantApply: 0},
		{name: "own credential with --force", self: true, force: true, wantOut: []string{"(--force)"}, wantApply: 3},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			f := newFake(t, nodes...)
			if tt.down != "" {
				f.down[tt.down] = true
			}

			own := f.credentials(t, "own")
			revoked := f.credentials(t, "revoked")

			if tt.self {
				revoked = own
			}

			var out bytes.Buffer

			err := revoke.Run(t.Context(), f, revoke.Options{
				Target:    &revoke.Target{Certificate: revoked.Crt, Credentials: &revoked, Entry: revocation.Entry{Reason: "test"}},
				Own:       own,
				Endpoints: []string{"10.0.0.1"},
				Force:     tt.force,
				Out:       &out,
			})
			if tt.wantErr != "" {
				require.ErrorContains(t, err, tt.wantErr)
			} else {
				require.NoError(t, err, out.String())
			}

			for _, want := range tt.wantOut {
				assert.Contains(t, out.String(), want)
			}

			assert.Equal(t, tt.wantApply, f.applies, out.String())

			if tt.wantApply > 0 && tt.force {
				assert.True(t, strings.HasSuffix(strings.TrimSpace(strings.Split(out.String(), "\n\n")[0]), "10.0.0.1: revoked, enforced"),
					"the endpoint goes last:\n%s", out.String())
			}
		})
	}
}

func TestRunIsIdempotentAndPrunes(t *testing.T) {
	t.Parallel()

	f := newFake(t, "10.0.0.1")
	own := f.credentials(t, "own")
	expired := revocation.Entry{Fingerprint: strings.Repeat("e", 64), NotAfter: "2020-01-01T00:00:00Z"}

	require.NoError(t, f.ApplyPatches(t.Context(), "10.0.0.1", [][]byte{[]byte(`{"machine": {"revokedCertificates": [{"fingerprint": "` + expired.Fingerprint + `", "notAfter": "2020-01-01T00:00:00Z"}]}}`)}))

	run := func(target *revoke.Target, prune bool) string {
		var out bytes.Buffer
		require.NoError(t, revoke.Run(t.Context(), f, revoke.Options{Target: target, Own: own, Endpoints: []string{"10.0.0.1"}, Prune: prune, Out: &out}))

		return out.String()
	}

	target := &revoke.Target{Entry: revocation.Entry{Fingerprint: strings.Repeat("a", 64)}}

	assert.Contains(t, run(target, false), "revoked, enforced")
	assert.Contains(t, run(target, false), "already revoked, enforced")
	assert.Equal(t, 2, f.applies, "the setup and the first run; the second changes nothing")
	assert.Contains(t, run(nil, true), "1 expired entries pruned")

	list, err := f.Revocations(t.Context(), "10.0.0.1")
	require.NoError(t, err)
	assert.False(t, slices.ContainsFunc(list, func(e revocation.Entry) bool { return revocation.Same(e, expired) }))
	assert.Len(t, list, 1)
}

func TestUnknownIssuer(t *testing.T) {
	t.Parallel()

	f := newFake(t, "10.0.0.1")

	var out bytes.Buffer

	err := revoke.Run(t.Context(), f, revoke.Options{
		Target:    &revoke.Target{Entry: revocation.Entry{Serial: "0A", Issuer: strings.Repeat("b", 64)}},
		Own:       f.credentials(t, "own"),
		Endpoints: []string{"10.0.0.1"},
		Out:       &out,
	})
	require.ErrorContains(t, err, "--issuer "+strings.Repeat("b", 64)+" is not the fingerprint of an OS CA")
	assert.Zero(t, f.applies)
	assert.False(t, errors.Is(err, context.Canceled))
}
