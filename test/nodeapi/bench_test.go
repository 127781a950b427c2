package nodeapi_test

import (
	"bufio"
	"crypto/tls"
	stdx509 "crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
)

// BenchmarkStartToServing measures a control-plane nodepkid's first boot: process start until the
// node API completes a TLS handshake with a certificate the OS CA signed (goal <= 300 ms).
func BenchmarkStartToServing(b *testing.B) {
	c := startCluster(b, "127.0.40.2", 0)
	bnd := loadBundle(b, c)
	ca := mustParse(b, bnd.Certs.OS.Crt)
	cp := c.Nodes[0]

	var total time.Duration

	for b.Loop() {
		require.NoError(b, c.Stop(cp.Address))
		require.NoError(b, os.RemoveAll(cp.StateDir))

		start := time.Now()

		require.NoError(b, c.Start(cp.Address))
		waitServing(b, cp.Address, ca)

		total += time.Since(start)
	}

	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/start")
}

// BenchmarkRestartToServing measures a worker killed with SIGKILL and started again until its API
// serves (it reissues its certificate through trustd first; goal <= 1 s).
func BenchmarkRestartToServing(b *testing.B) {
	c := startCluster(b, "127.0.41.2", 1)
	bnd := loadBundle(b, c)
	ca := mustParse(b, bnd.Certs.OS.Crt)
	worker := c.Nodes[1]

	var total time.Duration

	for b.Loop() {
		require.NoError(b, c.Kill(worker.Address))

		start := time.Now()

		require.NoError(b, c.Start(worker.Address))
		waitServing(b, worker.Address, ca)

		total += time.Since(start)
	}

	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/restart")
}

// BenchmarkIdleRSS reports the resident memory of an idle control plane and worker nodepkid after
// they have issued their certificates and served a few calls (goal <= 40 MiB).
func BenchmarkIdleRSS(b *testing.B) {
	c := startCluster(b, "127.0.42.2", 1)

	// Let the nodes settle after issuing their certificates before reading their memory.
	time.Sleep(2 * time.Second)

	var controlPlane, worker float64

	for b.Loop() {
		controlPlane, worker = rssMiB(b, c.Nodes[0].PID), rssMiB(b, c.Nodes[1].PID)
	}

	b.ReportMetric(controlPlane, "MiB-controlplane")
	b.ReportMetric(worker, "MiB-worker")
}

func waitServing(tb testing.TB, address string, ca *stdx509.Certificate) {
	tb.Helper()

	cfg := &tls.Config{RootCAs: pool(ca), ServerName: address}
	deadline := time.Now().Add(10 * time.Second)

	for time.Now().Before(deadline) {
		conn, err := tls.Dial("tcp", net.JoinHostPort(address, "50000"), cfg)
		if err == nil {
			conn.Close()

			return
		}

		time.Sleep(2 * time.Millisecond)
	}

	tb.Fatalf("%s did not serve within 10 s", address)
}

func mustParse(tb testing.TB, pemData []byte) *stdx509.Certificate {
	tb.Helper()

	crt, err := certs.ParseCertificate(pemData)
	require.NoError(tb, err)

	return crt
}

func rssMiB(tb testing.TB, pid int) float64 {
	tb.Helper()

	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	require.NoError(tb, err)

	defer f.Close()

	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if rest, ok := strings.CutPrefix(scanner.Text(), "VmRSS:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			require.NoError(tb, err)

			return float64(kb) / 1024
		}
	}

	tb.Fatalf("no VmRSS for pid %d", pid)

	return 0
}
