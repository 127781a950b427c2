package kubernetes_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkKubernetesCARotation rotates the Kubernetes CA of 3 control planes running real etcd
// and kube-apiserver (rotate-ca --kubernetes, every step verified through every kube-apiserver,
// --kubeconfig kept in step) and reports its wall time and the longest time any kube-apiserver
// was not ready to a /readyz probe every 100 ms (with the kubeconfig rotate-ca keeps).
func BenchmarkKubernetesCARotation(b *testing.B) {
	requireTools(b)

	c := startKubeCluster(b, "127.0.165.2", 3, 0)
	cps := c.ControlPlanes()
	kubeconfig := filepath.Join(b.TempDir(), "kubeconfig")

	if out, err := runCLI(b, c, "-n", cps[0], "kubeconfig", kubeconfig, "--merge=false"); err != nil {
		b.Fatalf("nodepkictl kubeconfig: %v\n%s", err, out)
	}

	var (
		total, maxOutage time.Duration
		i                int
	)

	for b.Loop() {
		i++
		plan := filepath.Join(b.TempDir(), fmt.Sprintf("plan-%d.yaml", i))
		probes := startReadyProber(kubeconfig, cps)

		start := time.Now()
		out, err := runCLI(b, c, "-e", cps[0], "rotate-ca", "--kubernetes", "--dry-run=false", "--kubeconfig", kubeconfig, "--plan", plan)
		elapsed := time.Since(start)

		probes.stop()

		if err != nil {
			b.Fatalf("rotate-ca: %v\n%s", err, out)
		}

		total += elapsed
		maxOutage = max(maxOutage, probes.maxOutage)

		b.Logf("rotation %d: %s, %d readyz rounds, not ready per apiserver %v, longest %s", i, elapsed.Round(time.Millisecond),
			probes.rounds, probes.downs, probes.maxOutage.Round(time.Millisecond))
	}

	b.ReportMetric(total.Seconds()/float64(i), "s/rotation")
	b.ReportMetric(maxOutage.Seconds(), "s-max-unready")
}
