package integration

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certcheck"
)

// BenchmarkCertsCheck measures the wall time of `nodepkictl certs check` (a new process: config
// loading, discovery through the endpoints, every node's leaves and CAs, the table) on a local
// cluster of real nodepkid processes with 3 control planes (every one an endpoint of the
// talosconfig, as cluster create writes it) and 27 workers.
func BenchmarkCertsCheck(b *testing.B) {
	c := startCluster(b, "127.0.101.2", 3, 27)

	// The check sees every node: discovery through the endpoints found all 30.
	stdout, stderr, code := certsCheck(b, c.Talosconfig, "-o", "json")
	require.Equal(b, certcheck.ExitOK, code, stderr)

	var report certcheck.Report
	require.NoError(b, json.Unmarshal([]byte(stdout), &report))

	checked := map[string]bool{}

	for _, item := range report.Items {
		if item.Kind == certcheck.KindLeaf {
			checked[item.Nodes[0]] = true
		}
	}

	require.Len(b, checked, 30)

	var worst time.Duration

	for b.Loop() {
		start := time.Now()
		stdout, stderr, code := certsCheck(b, c.Talosconfig)
		worst = max(worst, time.Since(start))

		require.Equal(b, certcheck.ExitOK, code, "%s\n%s", stdout, stderr)
	}

	b.ReportMetric(worst.Seconds(), "max-s/check")
}
