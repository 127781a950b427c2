package integration

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	nodeapi "github.com/nodepki/nodepki/api/node"
)

// scrapeSeries scrapes a node's /metrics and returns the value of every series, keyed by the
// series as the exposition writes it (name{labels in name order}).
func scrapeSeries(t assert.TestingT, address string) map[string]float64 {
	resp, err := http.Get("http://" + address + "/metrics") //nolint:noctx // the test context bounds the test, not one scrape
	if !assert.NoError(t, err) {
		return nil
	}

	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)
	if !assert.NoError(t, err) || !assert.Equal(t, http.StatusOK, resp.StatusCode) {
		return nil
	}

	series := map[string]float64{}
	scanner := bufio.NewScanner(strings.NewReader(string(body)))

	for scanner.Scan() {
		line := scanner.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}

		i := strings.LastIndexByte(line, ' ')
		if value, err := strconv.ParseFloat(line[i+1:], 64); assert.NoError(t, err, line) {
			series[line[:i]] = value
		}
	}

	return series
}

// TestMetricsCounters: every node of a real cluster counts its boot config, its first
// certificates, trustd the worker's request, and a control plane the node API calls by method and
// code, a patch and the renewal of the API certificate the patch causes (a new certSAN).
func TestMetricsCounters(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.140.2", 1, 1)
	cp, worker := c.Nodes[0], c.Nodes[1]
	require.Equal(t, "controlplane", cp.Type)

	cpMetrics, workerMetrics := cp.Address+":9180", worker.Address+":9180"

	for _, address := range []string{cpMetrics, workerMetrics} {
		require.EventuallyWithT(t, func(t *assert.CollectT) {
			s := scrapeSeries(t, address)
			assert.Equal(t, 1.0, s[`nodepki_config_applies_total{source="boot"}`], address)
			assert.Equal(t, 0.0, s[`nodepki_config_applies_total{source="patch"}`], address)
			assert.Equal(t, 1.0, s[`nodepki_certificate_issuances_total{id="api",root="os"}`], address)
		}, time.Minute, 200*time.Millisecond)
	}

	before := scrapeSeries(t, cpMetrics)
	assert.GreaterOrEqual(t, before[`nodepki_trustd_requests_total{result="OK"}`], 1.0, "the worker's API certificate came from trustd")
	assert.Zero(t, before[`nodepki_certificate_renewals_total{id="api",root="os"}`])

	patch := `{"machine": {"certSANs": ["metrics.example.com"]}}`

	out, err := runCLI(t, c, "-n", cp.Address, "patch", "machineconfig", "--patch", patch, "--dry-run")
	require.NoError(t, err, out)

	out, err = runCLI(t, c, "-n", cp.Address, "patch", "machineconfig", "--patch", patch)
	require.NoError(t, err, out)

	out, err = runCLI(t, c, "-n", cp.Address, "patch", "machineconfig", "--patch", `{"machine": {"certSANs": ["*.example.com"]}}`)
	require.Error(t, err, out)

	apply := nodeapi.NodeService_ApplyConfiguration_FullMethodName

	require.EventuallyWithT(t, func(t *assert.CollectT) {
		s := scrapeSeries(t, cpMetrics)
		assert.Equal(t, 1.0, s[`nodepki_config_applies_total{source="patch"}`], "the dry run writes nothing")
		assert.Equal(t, 0.0, s[`nodepki_config_applies_total{source="apply"}`])
		assert.Equal(t, 2.0, s[fmt.Sprintf(`nodepki_api_requests_total{code="OK",method=%q}`, apply)]-
			before[fmt.Sprintf(`nodepki_api_requests_total{code="OK",method=%q}`, apply)])
		assert.Equal(t, 1.0, s[fmt.Sprintf(`nodepki_api_requests_total{code="InvalidArgument",method=%q}`, apply)])
		assert.Equal(t, 1.0, s[`nodepki_certificate_renewals_total{id="api",root="os"}`], "the new SAN reissues the API certificate")
		assert.Equal(t, 1.0, s[`nodepki_certificate_issuances_total{id="api",root="os"}`])
	}, time.Minute, 200*time.Millisecond)

	// The worker applied nothing and serves no trustd.
	s := scrapeSeries(t, workerMetrics)
	assert.Zero(t, s[`nodepki_config_applies_total{source="patch"}`])
	assert.NotContains(t, s, `nodepki_trustd_requests_total{result="OK"}`)
}
