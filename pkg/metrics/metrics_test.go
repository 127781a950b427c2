package metrics_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/metrics"
	"github.com/nodepki/nodepki/resources"
	"github.com/nodepki/nodepki/resources/pki"
)

type fixture struct {
	st state.State
	ca *certs.CA
}

func newFixture(t *testing.T) fixture {
	t.Helper()

	st := state.WrapCore(namespaced.NewState(inmem.Build))
	require.NoError(t, resources.Register(t.Context(), st))

	crt, key, err := certs.NewRootCA(certs.RootOS)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(t, err)

	accepted := pki.NewAcceptedCA(pki.RootOS)
	// The same CA twice (as in a config that lists it again) is one series.
	accepted.TypedSpec().Certificates = []string{string(ca.CrtPEM), string(ca.CrtPEM)}
	accepted.TypedSpec().IssuingFingerprint = certs.Fingerprint(ca.Crt)
	require.NoError(t, st.Create(t.Context(), accepted))

	api := pki.NewCertificateStatus(pki.CertAPI)
	api.TypedSpec().Root = pki.RootOS
	api.TypedSpec().NotAfter = pki.NewTime(time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC))
	api.TypedSpec().RenewAt = pki.NewTime(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	api.TypedSpec().Trusted = true
	api.TypedSpec().State = pki.StateValid
	require.NoError(t, st.Create(t.Context(), api))

	pending := pki.NewCertificateStatus("etcd-peer")
	pending.TypedSpec().Root = "etcd"
	pending.TypedSpec().State = pki.StatePending
	require.NoError(t, st.Create(t.Context(), pending))

	return fixture{st: st, ca: ca}
}

func TestCollector(t *testing.T) {
	t.Parallel()

	f := newFixture(t)
	id := certs.Fingerprint(f.ca.Crt)[:12]

	want := fmt.Sprintf(`
# HELP nodepki_certificate_not_after_seconds NotAfter of the certificate, in seconds since the Unix epoch. id is the certificate ID of a leaf, the first 12 hex digits of the SHA-256 SPKI fingerprint of a CA.
# TYPE nodepki_certificate_not_after_seconds gauge
nodepki_certificate_not_after_seconds{id="api",kind="leaf",root="os"} %d
nodepki_certificate_not_after_seconds{id="%s",kind="ca",root="os"} %d
# HELP nodepki_certificate_renew_at_seconds When the node renews the leaf certificate, in seconds since the Unix epoch (leaves only).
# TYPE nodepki_certificate_renew_at_seconds gauge
nodepki_certificate_renew_at_seconds{id="api",kind="leaf",root="os"} %d
# HELP nodepki_certificate_trusted 1 when the leaf chains to a CA its root accepts (always 1 for an accepted CA), else 0.
# TYPE nodepki_certificate_trusted gauge
nodepki_certificate_trusted{id="api",kind="leaf",root="os"} 1
nodepki_certificate_trusted{id="etcd-peer",kind="leaf",root="etcd"} 0
nodepki_certificate_trusted{id="%s",kind="ca",root="os"} 1
`,
		time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC).Unix(), id, f.ca.Crt.NotAfter.Unix(),
		time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC).Unix(), id)

	require.NoError(t, testutil.CollectAndCompare(metrics.NewCollector(f.st), strings.NewReader(want)))
}

func TestCollectorComputesAtScrapeTime(t *testing.T) {
	t.Parallel()

	f := newFixture(t)
	c := metrics.NewCollector(f.st)

	before := testutil.CollectAndCount(c, "nodepki_certificate_not_after_seconds")

	_, err := safe.StateUpdateWithConflicts(t.Context(), f.st, pki.NewCertificateStatus("etcd-peer").Metadata(),
		func(r *pki.CertificateStatus) error {
			r.TypedSpec().NotAfter = pki.NewTime(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))

			return nil
		})
	require.NoError(t, err)

	assert.Equal(t, before+1, testutil.CollectAndCount(c, "nodepki_certificate_not_after_seconds"))
}

func TestServe(t *testing.T) {
	t.Parallel()

	f := newFixture(t)

	lis, err := net.Listen("tcp", "127.0.100.20:0")
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)

	m, err := metrics.New(f.st, metrics.NewCounters())
	require.NoError(t, err)

	go func() { served <- m.Serve(ctx, lis) }()

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+lis.Addr().String()+"/metrics", nil)
	require.NoError(t, err)

	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)

	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.NoError(t, resp.Body.Close())

	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, string(body), `nodepki_certificate_not_after_seconds{id="api",kind="leaf",root="os"} `+
		strconv.FormatFloat(float64(time.Date(2027, 1, 2, 3, 4, 5, 0, time.UTC).Unix()), 'g', -1, 64)+"\n")
	assert.Contains(t, string(body), "go_goroutines")
	assert.NotContains(t, string(body), "PRIVATE KEY")

	cancel()
	require.NoError(t, <-served)
}
