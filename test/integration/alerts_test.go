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

// alertRulesWithoutWait derives a rules file from the shipped one with the expiry alerts' `for:
// 10m` set to 0s, so that a test sees them fire at the first evaluation; every expression and
// threshold is the shipped one. A change of the shipped waits breaks the derivation, not the test's
// meaning.
func alertRulesWithoutWait(t *testing.T) string {
	t.Helper()

	shipped, err := os.ReadFile(shippedRules(t))
	require.NoError(t, err)

	require.Equal(t, 2, strings.Count(string(shipped), "for: 10m"), "the two expiry alerts wait 10m in the shipped rules")

	path := filepath.Join(t.TempDir(), "nodepki.rules.yml")
	require.NoError(t, os.WriteFile(path, []byte(strings.ReplaceAll(string(shipped), "for: 10m", "for: 0s")), 0o600))

	return path
}

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
	startPrometheus(t, prometheusAddress, alertRulesWithoutWait(t), c.MetricsAddresses())

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
