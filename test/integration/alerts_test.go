package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
)

// derivedRules derives a rules file from the shipped one: each replacement's old text must occur
// exactly as often as said, so that a change of the shipped rules breaks the derivation rather
// than silently testing something else. Every other expression and threshold is the shipped one.
func derivedRules(t *testing.T, replacements ...rulesReplacement) string {
	t.Helper()

	shipped, err := os.ReadFile(shippedRules(t))
	require.NoError(t, err)

	rules := string(shipped)

	for _, r := range replacements {
		require.Equal(t, r.count, strings.Count(rules, r.old), "occurrences of %q in the shipped rules", r.old)
		rules = strings.ReplaceAll(rules, r.old, r.new)
	}

	path := filepath.Join(t.TempDir(), "nodepki.rules.yml")
	require.NoError(t, os.WriteFile(path, []byte(rules), 0o600))

	return path
}

type rulesReplacement struct {
	old, new string
	count    int
}

// noExpiryWait removes the expiry alerts' 10-minute wait, so that a test sees them fire at the
// first evaluation.
var noExpiryWait = rulesReplacement{old: "for: 10m", new: "for: 0s", count: 2}

// shortLivedCA makes a self-signed CA certificate (PEM) that expires after lifetime.
func shortLivedCA(t *testing.T, lifetime time.Duration) []byte {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)

	template := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "expiring test CA"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}

	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	require.NoError(t, err)

	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestExpiringCAAlertFires: a real Prometheus with the shipped expiry rules (their 10-minute wait
// removed) scrapes a real cluster; nothing fires for the cluster's own certificates; a CA the
// control plane accepts that expires in 20 days fires NodepkiCertificateExpiresWithin30Days for
// exactly that CA on exactly that node, and not the 7-day alert.
func TestExpiringCAAlertFires(t *testing.T) {
	t.Parallel()

	const prometheusAddress = "127.0.140.100:9090"

	c := startCluster(t, "127.0.140.20", 1, 1)
	startPrometheus(t, prometheusAddress, derivedRules(t, noExpiryWait), c.MetricsAddresses())

	cp := c.Nodes[0]
	instance := cp.Address + ":9180"

	// Every node is scraped, and every rule evaluated, before anything expiring is added.
	require.EventuallyWithT(t, func(t *assert.CollectT) {
		up := promQuery(t, prometheusAddress, `up{job="nodepki"} == 1`)
		assert.Len(t, up, len(c.Nodes))
		assert.NotEmpty(t, promQuery(t, prometheusAddress, `nodepki_certificate_renew_at_seconds`))
	}, time.Minute, 500*time.Millisecond)

	assert.Empty(t, promQuery(t, prometheusAddress, `ALERTS{alertname=~"NodepkiCertificate.*"}`),
		"leaves renewed on time and 10-year CAs fire nothing")

	caPEM := shortLivedCA(t, 20*24*time.Hour)
	crt, err := certs.ParseCertificate(caPEM)
	require.NoError(t, err)

	patch := fmt.Sprintf(`{"machine": {"acceptedCAs": [{"crt": %q}]}}`, base64.StdEncoding.EncodeToString(caPEM))
	out, err := runCLI(t, c, "-n", cp.Address, "patch", "machineconfig", "--patch", patch)
	require.NoError(t, err, out)

	want := map[string]string{
		"alertname":  "NodepkiCertificateExpiresWithin30Days",
		"alertstate": "firing",
		"instance":   instance,
		"job":        "nodepki",
		"kind":       "ca",
		"root":       "os",
		"id":         certs.Fingerprint(crt)[:12],
		"severity":   "warning",
		"__name__":   "ALERTS",
	}

	require.EventuallyWithT(t, func(t *assert.CollectT) {
		firing := promQuery(t, prometheusAddress, `ALERTS{alertname=~"NodepkiCertificate.*",alertstate="firing"}`)
		if assert.Len(t, firing, 1) {
			assert.Equal(t, want, firing[0].Metric)
		}
	}, time.Minute, 500*time.Millisecond)

	assert.Empty(t, promQuery(t, prometheusAddress, `ALERTS{alertname="NodepkiCertificateExpiresWithin7Days"}`))
}

// TestShortLifetimeExpiryAlertFires: with short lifetimes (machine.certificateLifetimes) a worker
// whose control plane is gone cannot renew its node API certificate, and the shipped expiry alerts
// fire for it in a real Prometheus (their 10-minute wait removed, and the 15 minutes a renewal may
// be late cut to 5 s, since the leaf lives 10 s). That nothing fires for leaves renewed on time is
// TestExpiringCAAlertFires's first check (an instant check here would race the 5 s cut).
func TestShortLifetimeExpiryAlertFires(t *testing.T) {
	t.Parallel()

	const prometheusAddress = "127.0.140.101:9090"

	c := startCluster(t, "127.0.140.40", 1, 1)
	startPrometheus(t, prometheusAddress, derivedRules(t, noExpiryWait,
		rulesReplacement{old: "> 900", new: "> 5", count: 3}), c.MetricsAddresses())

	cp, worker := c.Nodes[0], c.Nodes[1]
	workerInstance := worker.Address + ":9180"

	// Control plane first: trustd signs the worker's node API certificate with its own api lifetime.
	for _, node := range []string{cp.Address, worker.Address} {
		out, err := runCLI(t, c, "-n", node, "patch", "machineconfig",
			"--patch", `{"machine": {"certificateLifetimes": {"api": "10s", "etcd": "10s", "kubernetes": "10s"}}}`)
		require.NoError(t, err, out)
	}

	workerAPI := fmt.Sprintf(`nodepki_certificate_not_after_seconds{instance=%q,id="api",kind="leaf"}`, workerInstance)

	require.EventuallyWithT(t, func(t *assert.CollectT) {
		assert.Len(t, promQuery(t, prometheusAddress, workerAPI+" - time() < 20"), 1, "the worker's API certificate lives 10 s")
	}, time.Minute, 500*time.Millisecond)

	require.NoError(t, c.Stop(cp.Address))

	for _, alert := range []string{"NodepkiCertificateExpiresWithin30Days", "NodepkiCertificateExpiresWithin7Days"} {
		require.EventuallyWithT(t, func(t *assert.CollectT) {
			firing := promQuery(t, prometheusAddress, fmt.Sprintf(
				`ALERTS{alertname=%q,alertstate="firing",instance=%q,kind="leaf",root="os",id="api"}`, alert, workerInstance))
			assert.Len(t, firing, 1, alert)
		}, time.Minute, 500*time.Millisecond)
	}
}
