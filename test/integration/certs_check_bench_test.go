package integration

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certcheck"
)

// BenchmarkCertsCheck measures the wall time of `nodepkictl certs check` (a new process: config
// loading, discovery through the endpoints, every node's leaves and CAs, the table) on a local
// cluster of real nodepkid processes with 3 control planes and 27 workers.
func BenchmarkCertsCheck(b *testing.B) {
	c := startCluster(b, "127.0.101.2", 3, 27)

	var worst time.Duration

	for b.Loop() {
		start := time.Now()
		stdout, stderr, code := certsCheck(b, c.Talosconfig)
		worst = max(worst, time.Since(start))

		require.Equal(b, certcheck.ExitOK, code, "%s\n%s", stdout, stderr)
	}

	b.ReportMetric(worst.Seconds(), "max-s/check")
}
