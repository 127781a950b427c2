package trustd_test

import (
	"crypto/tls"
	stdx509 "crypto/x509"
	"encoding/pem"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	trustdapi "github.com/nodepki/nodepki/api/trustd"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/runtime/trustd"
)

const benchClients = 64

// BenchmarkSignRaw is the machine's raw CSR signing rate with every core busy: parse and check
// the CSR, sign it. It is the ceiling BenchmarkTrustd64Clients is compared with.
func BenchmarkSignRaw(b *testing.B) {
	cp := newControlPlane(b, certs.RootOS)
	csrPEM := makeCSR(b, csrRequest{commonName: "worker", ips: []string{"127.0.0.3"}})
	profile := certs.Profile{
		KeyUsage:    stdx509.KeyUsageDigitalSignature,
		ExtKeyUsage: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth},
		Lifetime:    trustd.CertificateLifetime,
	}

	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			block, _ := pem.Decode(csrPEM)

			csr, err := stdx509.ParseCertificateRequest(block.Bytes)
			if err != nil {
				b.Error(err)

				return
			}

			p := profile
			p.IPAddresses = csr.IPAddresses

			if _, err = cp.ca.SignCSR(csr, p, time.Now()); err != nil {
				b.Error(err)

				return
			}
		}
	})

	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
}

// BenchmarkTrustd64Clients measures trustd's signing throughput with 64 concurrent clients, each
// on its own TLS connection as 64 workers would be (goal: >= 0.6 of BenchmarkSignRaw's rate).
// The per-client rate limit is raised: it is a policy, not the capacity being measured.
func BenchmarkTrustd64Clients(b *testing.B) {
	cp := newControlPlane(b, certs.RootOS)

	srv, err := trustd.New(trustd.Options{State: cp.state, Logger: zap.NewNop(), RateLimit: rate.Inf})
	require.NoError(b, err)

	address := serve(b, srv)
	csrPEM := makeCSR(b, csrRequest{commonName: "worker", ips: []string{"127.0.0.3"}})

	roots := stdx509.NewCertPool()
	roots.AppendCertsFromPEM(cp.ca.CrtPEM)

	clients := make([]trustdapi.TrustdServiceClient, benchClients)

	for i := range clients {
		conn, err := grpc.NewClient(address, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
			RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13,
		})))
		require.NoError(b, err)

		b.Cleanup(func() { conn.Close() }) //nolint:errcheck

		clients[i] = trustdapi.NewTrustdServiceClient(conn)
	}

	ctx := metadata.AppendToOutgoingContext(b.Context(), trustd.TokenMetadataKey, machineToken)

	// Warm up the connections so that handshakes are not part of the measurement.
	for _, client := range clients {
		_, err := client.Certificate(ctx, &trustdapi.CertificateRequest{Csr: csrPEM})
		require.NoError(b, err)
	}

	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)

	b.ResetTimer()

	for _, client := range clients {
		wg.Add(1)

		go func() {
			defer wg.Done()

			for next.Add(1) <= int64(b.N) {
				if _, err := client.Certificate(ctx, &trustdapi.CertificateRequest{Csr: csrPEM}); err != nil {
					failed.Add(1)
				}
			}
		}()
	}

	wg.Wait()
	b.StopTimer()

	require.Zero(b, failed.Load(), "every request is signed")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
}
