package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/resources/pki"
)

// shippedRules is the path of the shipped alert rules.
func shippedRules(t *testing.T) string {
	t.Helper()

	rules, err := filepath.Abs(filepath.Join("..", "..", "docs", "alerts", "nodepki.rules.yml"))
	require.NoError(t, err)

	return rules
}

// startPrometheus runs Debian's prometheus on address, scraping targets every second with the
// alert rules file rules, until the test ends.
func startPrometheus(t *testing.T, address, rules string, targets []string) {
	t.Helper()

	binary, err := exec.LookPath("prometheus")
	require.NoError(t, err, "prometheus is needed: apt-get install prometheus")

	dir := t.TempDir()
	config := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(config, fmt.Appendf(nil, `global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: nodepki
    static_configs:
      - targets: ["%s"]
`, rules, strings.Join(targets, `", "`)), 0o600))

	cmd := exec.Command(binary, "--config.file="+config, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+address)

	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs

	require.NoError(t, cmd.Start())

	t.Cleanup(func() {
		require.NoError(t, cmd.Process.Kill())

		err := cmd.Wait()

		var exitErr *exec.ExitError
		if !assert.ErrorAs(t, err, &exitErr, "prometheus exits because it was killed") || t.Failed() {
			t.Logf("prometheus log:\n%s", logs.String())
		}
	})
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// promQuery runs an instant query against the test's Prometheus on address.
func promQuery(t assert.TestingT, address, query string) []promSample {
	resp, err := http.Get("http://" + address + "/api/v1/query?query=" + url.QueryEscape(query))
	if !assert.NoError(t, err) {
		return nil
	}

	defer resp.Body.Close()

	var body struct {
		Status string `json:"status"`
		Data   struct {
			Result []promSample `json:"result"`
		} `json:"data"`
	}

	if !assert.NoError(t, json.NewDecoder(resp.Body).Decode(&body)) || !assert.Equal(t, "success", body.Status) {
		return nil
	}

	return body.Data.Result
}

// TestPrometheusScrapesEveryNode: a real Prometheus scrapes every node of a local cluster and
// finds the NotAfter of every leaf of every node and of every CA each node accepts, with the
// values the nodes report; the shipped rules load.
func TestPrometheusScrapesEveryNode(t *testing.T) {
	t.Parallel()

	const prometheusAddress = "127.0.102.100:9090"

	c := startCluster(t, "127.0.102.2", 1, 1)
	startPrometheus(t, prometheusAddress, shippedRules(t), c.MetricsAddresses())

	cl := connect(t, c.Talosconfig)

	// want is instance -> "kind/root/id" -> NotAfter, from the nodes' own resources.
	want := map[string]map[string]int64{}

	for _, node := range c.Nodes {
		instance := fmt.Sprintf("%s:9180", node.Address)
		want[instance] = map[string]int64{}

		statuses, err := safe.StateListAll[*pki.CertificateStatus](client.WithNode(t.Context(), node.Address), cl.COSI())
		require.NoError(t, err)

		for res := range statuses.All() {
			notAfter, err := time.Parse(time.RFC3339, res.TypedSpec().NotAfter.String())
			require.NoError(t, err, "leaf %s of %s", res.Metadata().ID(), node.Address)

			want[instance]["leaf/"+res.TypedSpec().Root+"/"+res.Metadata().ID()] = notAfter.Unix()
		}

		accepted, err := safe.StateListAll[*pki.AcceptedCA](client.WithNode(t.Context(), node.Address), cl.COSI())
		require.NoError(t, err)

		for res := range accepted.All() {
			for _, p := range res.TypedSpec().Certificates {
				crt, err := certs.ParseCertificate([]byte(p))
				require.NoError(t, err)

				want[instance]["ca/"+res.Metadata().ID()+"/"+certs.Fingerprint(crt)[:12]] = crt.NotAfter.Unix()
			}
		}

		require.NotEmpty(t, want[instance])
	}

	require.EventuallyWithT(t, func(t *assert.CollectT) {
		got := map[string]map[string]int64{}

		for _, s := range promQuery(t, prometheusAddress, `nodepki_certificate_not_after_seconds{job="nodepki"}`) {
			value, err := strconv.ParseFloat(fmt.Sprint(s.Value[1]), 64)
			if !assert.NoError(t, err) {
				return
			}

			instance := s.Metric["instance"]
			if got[instance] == nil {
				got[instance] = map[string]int64{}
			}

			got[instance][s.Metric["kind"]+"/"+s.Metric["root"]+"/"+s.Metric["id"]] = int64(value)
		}

		assert.Equal(t, want, got)
	}, time.Minute, 500*time.Millisecond)

	// Every leaf is trusted, and the shipped rules are loaded and healthy.
	for _, s := range promQuery(t, prometheusAddress, `nodepki_certificate_trusted{kind="leaf"}`) {
		assert.Equal(t, "1", s.Value[1], "%v", s.Metric)
	}

	resp, err := http.Get("http://" + prometheusAddress + "/api/v1/rules")
	require.NoError(t, err)

	defer resp.Body.Close()

	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name   string `json:"name"`
					Health string `json:"health"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}

	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rules))
	require.Len(t, rules.Data.Groups, 1)
	assert.Len(t, rules.Data.Groups[0].Rules, 5)

	for _, r := range rules.Data.Groups[0].Rules {
		assert.NotEqual(t, "err", r.Health, r.Name)
	}
}
