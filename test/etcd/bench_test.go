package etcd

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkEtcdCARotation rotates the etcd CA of 3 real etcd members (rotate-ca --etcd, every
// step verified, two rolling restarts) and reports its wall time and the longest time any member
// was unavailable to a health probe every 100 ms.
func BenchmarkEtcdCARotation(b *testing.B) {
	c := startCluster(b, "127.0.74.2", 3, 0)
	endpoints := clientEndpoints(c)
	dir := filepath.Join(b.TempDir(), "etcd-client")
	oldCAClient(b, c).write(b, dir)

	var (
		total     time.Duration
		maxOutage time.Duration
		i         int
	)

	for b.Loop() {
		i++
		plan := filepath.Join(b.TempDir(), fmt.Sprintf("plan-%d.yaml", i))
		probes := startProber(b, dir, endpoints)

		start := time.Now()
		out, err := runCLI(b, c, "-e", c.ControlPlanes()[0], "rotate-ca", "--etcd", "--dry-run=false", "--etcd-client-dir", dir, "--plan", plan)
		elapsed := time.Since(start)

		probes.stop()

		if err != nil {
			b.Fatalf("rotate-ca: %v\n%s", err, out)
		}

		if probes.minAlive < 2 {
			b.Fatalf("two members down at once: %v", probes.worst)
		}

		total += elapsed
		maxOutage = max(maxOutage, probes.maxOutage)

		b.Logf("rotation %d: %s, longest member unavailability %s", i, elapsed.Round(time.Millisecond), probes.maxOutage.Round(time.Millisecond))
	}

	b.ReportMetric(total.Seconds()/float64(i), "s/rotation")
	b.ReportMetric(maxOutage.Seconds(), "s-max-unavailable")
}
