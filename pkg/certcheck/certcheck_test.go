package certcheck_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certcheck"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/rotate"
	"github.com/nodepki/nodepki/resources/pki"
)

// now is real time: the CAs of the tests are made now.
var now = time.Now().Truncate(time.Second)

// fakeCluster answers from maps; a node missing from statuses is unreachable.
type fakeCluster struct {
	members  []rotate.Member
	cas      map[rotate.Root]pki.AcceptedCASpec
	statuses map[string]map[string]pki.CertificateStatusSpec
}

func (f *fakeCluster) Members(context.Context, string) ([]rotate.Member, error) {
	return f.members, nil
}

func (f *fakeCluster) AcceptedCAs(_ context.Context, node string) (map[rotate.Root]pki.AcceptedCASpec, error) {
	if _, ok := f.statuses[node]; !ok {
		return nil, errors.New("connection refused")
	}

	return f.cas, nil
}

func (f *fakeCluster) CertificateStatuses(_ context.Context, node string) (map[string]pki.CertificateStatusSpec, error) {
	return f.statuses[node], nil
}

func leaf(state string, trusted bool, notAfter, renewAt time.Time) pki.CertificateStatusSpec {
	return pki.CertificateStatusSpec{
		Root: "os", State: state, Trusted: trusted,
		NotAfter: pki.NewTime(notAfter), RenewAt: pki.NewTime(renewAt),
	}
}

func newCA(t *testing.T, root string) *certs.CA {
	t.Helper()

	crt, key, err := certs.NewRootCA(root)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(t, err)

	return ca
}

func TestJudgeLeaves(t *testing.T) {
	t.Parallel()

	day := 24 * time.Hour
	ca := newCA(t, "os")

	for _, tc := range []struct {
		name      string
		spec      pki.CertificateStatusSpec
		wantState string
	}{
		{"valid, a year left", leaf(pki.StateValid, true, now.Add(365*day), now.Add(240*day)), certcheck.StateOK},
		{"short-lived, renewal not due", leaf(pki.StateValid, true, now.Add(8*time.Hour), now.Add(2*time.Hour)), certcheck.StateOK},
		{"within the window, renewal due", leaf(pki.StateRenewing, true, now.Add(10*day), now.Add(-day)), certcheck.StateExpiring},
		{"renewing, outside the window", leaf(pki.StateRenewing, true, now.Add(100*day), now.Add(-day)), certcheck.StateRenewing},
		{"node says expiring", leaf(pki.StateExpiring, true, now.Add(100*day), now.Add(-day)), certcheck.StateExpiring},
		{"expired", leaf(pki.StateExpired, true, now.Add(-time.Minute), now.Add(-day)), certcheck.StateExpired},
		{"past NotAfter while the node still says valid", leaf(pki.StateValid, true, now.Add(-time.Minute), now.Add(-day)), certcheck.StateExpired},
		{"untrusted", leaf(pki.StateUntrusted, false, now.Add(365*day), now.Add(240*day)), certcheck.StateUntrusted},
		{"not trusted whatever the state", leaf(pki.StateValid, false, now.Add(365*day), now.Add(240*day)), certcheck.StateUntrusted},
		{"pending", pki.CertificateStatusSpec{Root: "os", State: pki.StatePending, LastError: "no CA key"}, certcheck.StatePending},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			cl := &fakeCluster{
				members:  []rotate.Member{{Address: "10.0.0.1", LastSeen: now}},
				cas:      map[rotate.Root]pki.AcceptedCASpec{"os": {Certificates: []string{string(ca.CrtPEM)}}},
				statuses: map[string]map[string]pki.CertificateStatusSpec{"10.0.0.1": {"api": tc.spec}},
			}

			report, err := certcheck.Check(t.Context(), cl, certcheck.Options{Endpoints: []string{"10.0.0.1"}, Now: now})
			require.NoError(t, err)
			require.Len(t, report.Items, 2)

			assert.Equal(t, tc.wantState, report.Items[0].State, "%+v", report.Items[0])

			want := certcheck.ExitOK
			if report.Items[0].Problem() {
				want = certcheck.ExitProblem
			}

			assert.Equal(t, want, report.ExitCode)
		})
	}
}

func TestCheckCAsClientsAndReachability(t *testing.T) {
	t.Parallel()

	osCA, k8sCA := newCA(t, "os"), newCA(t, "kubernetes")
	ok := leaf(pki.StateValid, true, now.Add(300*24*time.Hour), now.Add(200*24*time.Hour))

	client, err := osCA.IssueParsed(certs.ClientProfile([]string{"os:admin"}, 20*24*time.Hour), now)
	require.NoError(t, err)

	foreign, err := newCA(t, "os").IssueParsed(certs.ClientProfile([]string{"os:admin"}, certs.ClientLifetime), now)
	require.NoError(t, err)

	cl := &fakeCluster{
		members: []rotate.Member{
			{Address: "10.0.0.1", MachineType: "controlplane", LastSeen: now},
			{Address: "10.0.0.2", MachineType: "worker", LastSeen: now.Add(-time.Hour)},
			{Address: "10.0.0.3", MachineType: "worker", LastSeen: now.Add(-72 * time.Hour)},
		},
		cas: map[rotate.Root]pki.AcceptedCASpec{
			"os":         {Certificates: []string{string(osCA.CrtPEM)}, IssuingFingerprint: certs.Fingerprint(osCA.Crt)},
			"kubernetes": {Certificates: []string{string(k8sCA.CrtPEM), "garbage"}},
		},
		statuses: map[string]map[string]pki.CertificateStatusSpec{"10.0.0.1": {"api": ok}, "10.0.0.2": {"api": ok}},
	}

	t.Run("CAs are one row each, the stale member is left out", func(t *testing.T) {
		t.Parallel()

		report, err := certcheck.Check(t.Context(), cl, certcheck.Options{Endpoints: []string{"10.0.0.1"}, Now: now})
		require.NoError(t, err)

		var cas []certcheck.Item

		for _, item := range report.Items {
			if item.Kind == certcheck.KindCA {
				cas = append(cas, item)
			}
		}

		// The unreadable kubernetes CA is reported by each node, before the readable CAs.
		require.Len(t, cas, 4, "%+v", cas)

		for i, node := range []string{"10.0.0.1", "10.0.0.2"} {
			assert.Equal(t, certcheck.StateUntrusted, cas[i].State, "%+v", cas[i])
			assert.Equal(t, []string{node}, cas[i].Nodes)
			assert.Contains(t, cas[i].Detail, "accepted CA 2 cannot be parsed")
		}

		assert.Equal(t, "accepted", cas[2].Detail)
		assert.Equal(t, []string{"10.0.0.1", "10.0.0.2"}, cas[3].Nodes)
		assert.Equal(t, "issuing", cas[3].Detail)
		assert.Contains(t, report.Notes[0], "member 10.0.0.3 left out")
		assert.Equal(t, certcheck.ExitProblem, report.ExitCode)
	})

	t.Run("client certificates", func(t *testing.T) {
		t.Parallel()

		healthy := *cl
		healthy.cas = map[rotate.Root]pki.AcceptedCASpec{"os": cl.cas["os"], "kubernetes": {Certificates: []string{string(k8sCA.CrtPEM)}}}

		report, err := certcheck.Check(t.Context(), &healthy, certcheck.Options{
			Endpoints: []string{"10.0.0.1"},
			Now:       now,
			Clients: []certcheck.ClientCertificate{
				{Source: "talosconfig", Root: "os", Crt: client.Crt},
				{Source: "foreign", Root: "os", Crt: foreign.Crt},
				{Source: "other cluster's kubeconfig", Root: "kubernetes", Crt: foreign.Crt, ClusterCAs: []*x509.Certificate{newCA(t, "kubernetes").Crt}},
			},
		})
		require.NoError(t, err)

		clients := report.Items[len(report.Items)-2:]
		assert.Equal(t, certcheck.StateExpiring, clients[0].State, "%+v", clients[0])
		assert.True(t, clients[0].Trusted)
		assert.Equal(t, 20, clients[0].DaysLeft)
		assert.Equal(t, certcheck.StateUntrusted, clients[1].State, "%+v", clients[1])
		assert.Contains(t, report.Notes, "other cluster's kubeconfig is not for this cluster: not checked")
		assert.Equal(t, certcheck.ExitProblem, report.ExitCode)

		report, err = certcheck.Check(t.Context(), &healthy, certcheck.Options{
			Endpoints: []string{"10.0.0.1"}, Now: now, Warn: 10 * 24 * time.Hour,
			Clients: []certcheck.ClientCertificate{{Source: "talosconfig", Root: "os", Crt: client.Crt}},
		})
		require.NoError(t, err)
		assert.Equal(t, certcheck.ExitOK, report.ExitCode, "%+v", report)
	})

	t.Run("an unreachable node outranks problems", func(t *testing.T) {
		t.Parallel()

		report, err := certcheck.Check(t.Context(), cl, certcheck.Options{Nodes: []string{"10.0.0.1", "10.0.0.9"}, Now: now})
		require.NoError(t, err)
		assert.Equal(t, []certcheck.Unreachable{{Node: "10.0.0.9", Error: "connection refused"}}, report.Unreachable)
		assert.Equal(t, certcheck.ExitUnreachable, report.ExitCode)
	})
}
