package trustd_test

import (
	"bufio"
	"context"
	"crypto/tls"
	stdx509 "crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
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

// loadEnv names the load file that turns the test binary into BenchmarkTrustd64Clients's
// client process (see TestMain).
const loadEnv = "NODEPKI_TRUSTD_BENCH_LOAD"

func TestMain(m *testing.M) {
	if path := os.Getenv(loadEnv); path != "" {
		if err := runLoadProcess(path); err != nil {
			fmt.Fprintln(os.Stderr, "trustd load process:", err)
			os.Exit(1)
		}

		os.Exit(0)
	}

	os.Exit(m.Run())
}

// BenchmarkSignRaw is the machine's raw CSR signing rate: parse and check the CSR, sign it. It is
// the ceiling BenchmarkTrustd64Clients is compared with, on every core and on one core.
func BenchmarkSignRaw(b *testing.B) {
	cp := newControlPlane(b, certs.RootOS)
	csrPEM := makeCSR(b, csrRequest{commonName: "worker", ips: []string{"127.0.0.3"}})
	profile := certs.Profile{
		KeyUsage:    stdx509.KeyUsageDigitalSignature,
		ExtKeyUsage: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth},
		Lifetime:    trustd.CertificateLifetime,
	}

	for _, cores := range []struct {
		name  string
		procs int
	}{{"all-cores", runtime.GOMAXPROCS(0)}, {"one-core", 1}} {
		b.Run(cores.name, func(b *testing.B) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(cores.procs))

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
		})
	}
}

// BenchmarkTrustd64Clients measures trustd's signing throughput with 64 concurrent clients, each
// on its own TLS connection as 64 workers would be (goal: >= 0.6 of BenchmarkSignRaw's rate).
// The per-client rate limit is raised: it is a policy, not the capacity being measured.
//
//   - in-process-clients: the clients run in the benchmark process and share every core with the
//     server; compare with BenchmarkSignRaw/all-cores.
//   - server-on-one-core: the server runs with one core (GOMAXPROCS=1) and the clients in a
//     process of their own, as workers are machines of their own; compare with
//     BenchmarkSignRaw/one-core. server-cpu is the server process's CPU time over the wall time:
//     near 1 means the server, not the clients, is what the rate measures.
func BenchmarkTrustd64Clients(b *testing.B) {
	cp := newControlPlane(b, certs.RootOS)

	srv, err := trustd.New(trustd.Options{State: cp.state, Logger: zap.NewNop(), RateLimit: rate.Inf})
	require.NoError(b, err)

	load := benchLoad{
		Address: serve(b, srv),
		CA:      cp.ca.CrtPEM,
		CSR:     makeCSR(b, csrRequest{commonName: "worker", ips: []string{"127.0.0.3"}}),
		Token:   machineToken,
	}

	b.Run("in-process-clients", func(b *testing.B) {
		clients, err := load.dial(b.Context())
		require.NoError(b, err)

		b.ResetTimer()

		failed := clients.run(b.Context(), b.N)

		b.StopTimer()

		require.Zero(b, failed, "every request is signed")
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
	})

	b.Run("server-on-one-core", func(b *testing.B) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))

		client := startLoadProcess(b, load)

		cpuBefore := processCPUTime(b)

		b.ResetTimer()

		failed := client.run(b, b.N)

		b.StopTimer()

		require.Zero(b, failed, "every request is signed")
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "signs/s")
		b.ReportMetric((processCPUTime(b)-cpuBefore).Seconds()/b.Elapsed().Seconds(), "server-cpu")
	})
}

// benchLoad is what the clients need to call trustd; the client process reads it as JSON.
type benchLoad struct {
	Address string
	CA      []byte
	CSR     []byte
	Token   string
}

// benchClientSet is benchClients trustd clients, each on its own warmed-up connection.
type benchClientSet struct {
	load    benchLoad
	clients []trustdapi.TrustdServiceClient
}

// dial connects the clients and makes one request on each, so that TLS handshakes are not part
// of the measurement. The connections close when ctx is done.
func (load benchLoad) dial(ctx context.Context) (*benchClientSet, error) {
	roots := stdx509.NewCertPool()
	if !roots.AppendCertsFromPEM(load.CA) {
		return nil, errors.New("no CA certificate in the load")
	}

	set := &benchClientSet{load: load}
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13})

	for range benchClients {
		conn, err := grpc.NewClient(load.Address, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, err
		}

		context.AfterFunc(ctx, func() { conn.Close() })

		set.clients = append(set.clients, trustdapi.NewTrustdServiceClient(conn))
	}

	if failed := set.run(ctx, len(set.clients)); failed > 0 {
		return nil, fmt.Errorf("%d of %d warm-up requests failed", failed, len(set.clients))
	}

	return set, nil
}

// run makes n requests spread over the clients, all of them busy at once, and returns how many failed.
func (set *benchClientSet) run(ctx context.Context, n int) int64 {
	ctx = metadata.AppendToOutgoingContext(ctx, trustd.TokenMetadataKey, set.load.Token)

	var (
		next   atomic.Int64
		failed atomic.Int64
		wg     sync.WaitGroup
	)

	for _, client := range set.clients {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if _, err := client.Certificate(ctx, &trustdapi.CertificateRequest{Csr: set.load.CSR}); err != nil {
					failed.Add(1)
				}
			}
		})
	}

	wg.Wait()

	return failed.Load()
}

// loadProcess drives the client process: one line per round on its stdin (the number of
// requests), one line back on its stdout (the number that failed).
type loadProcess struct {
	stdin  *os.File
	stdout *bufio.Scanner
}

// startLoadProcess starts the test binary as the client process with one core of its own, and
// returns once its connections are warmed up. It is stopped when the benchmark ends.
func startLoadProcess(b *testing.B, load benchLoad) *loadProcess {
	b.Helper()

	data, err := json.Marshal(load)
	require.NoError(b, err)

	loadFile := filepath.Join(b.TempDir(), "load.json")
	require.NoError(b, os.WriteFile(loadFile, data, 0o600))

	stdinReader, stdinWriter, err := os.Pipe()
	require.NoError(b, err)

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), loadEnv+"="+loadFile, "GOMAXPROCS=1")
	cmd.Stdin, cmd.Stderr = stdinReader, os.Stderr

	stdout, err := cmd.StdoutPipe()
	require.NoError(b, err)
	require.NoError(b, cmd.Start())
	stdinReader.Close()

	b.Cleanup(func() {
		stdinWriter.Close()
		require.NoError(b, cmd.Wait(), "the client process exits cleanly")
	})

	proc := &loadProcess{stdin: stdinWriter, stdout: bufio.NewScanner(stdout)}
	require.True(b, proc.stdout.Scan(), "the client process says it is ready")
	require.Equal(b, "ready", proc.stdout.Text())

	return proc
}

// run has the client process make n requests and returns how many failed.
func (p *loadProcess) run(b *testing.B, n int) int64 {
	b.Helper()

	_, err := fmt.Fprintln(p.stdin, n)
	require.NoError(b, err)
	require.True(b, p.stdout.Scan(), "the client process reports the round")

	failed, err := strconv.ParseInt(p.stdout.Text(), 10, 64)
	require.NoError(b, err)

	return failed
}

// runLoadProcess is the client process's main: it dials trustd, says "ready", then runs one round
// per line of its stdin until stdin closes.
func runLoadProcess(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}

	var load benchLoad
	if err = json.Unmarshal(data, &load); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	set, err := load.dial(ctx)
	if err != nil {
		return err
	}

	fmt.Println("ready")

	rounds := bufio.NewScanner(os.Stdin)
	for rounds.Scan() {
		n, err := strconv.Atoi(rounds.Text())
		if err != nil {
			return fmt.Errorf("round %q: %w", rounds.Text(), err)
		}

		fmt.Println(set.run(ctx, n))
	}

	return rounds.Err()
}

// processCPUTime is the CPU time (user and system) this process has used so far.
func processCPUTime(b *testing.B) time.Duration {
	b.Helper()

	var usage syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &usage))

	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano())
}
