package etcd

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/cluster"
	etcdpkg "github.com/nodepki/nodepki/pkg/etcd"
)

const (
	// probeInterval is how often every member's health is probed.
	probeInterval = 100 * time.Millisecond
	// probeTimeout bounds one probe: a member that does not answer within it counts as down.
	probeTimeout = 2 * time.Second
)

// clientFiles are an outside etcd client's files (what --etcd-client-dir holds).
type clientFiles struct {
	ca, crt, key []byte
}

// oldCAClient issues a client certificate of the cluster's etcd CA (from its secrets.yaml).
func oldCAClient(t testing.TB, c *cluster.Cluster) clientFiles {
	t.Helper()

	b, err := bundle.Load(filepath.Join(c.Dir, "secrets.yaml"))
	require.NoError(t, err)

	ca, err := certs.LoadCA(b.Certs.Etcd.Crt, b.Certs.Etcd.Key)
	require.NoError(t, err)

	crt, key, err := ca.Issue(certs.Profile{
		CommonName:  "load",
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Lifetime:    time.Hour,
	}, time.Now())
	require.NoError(t, err)

	return clientFiles{ca: b.Certs.Etcd.Crt, crt: crt, key: key}
}

func (f clientFiles) write(t testing.TB, dir string) {
	t.Helper()

	require.NoError(t, os.MkdirAll(dir, 0o700))

	for name, data := range map[string][]byte{"ca.crt": f.ca, "client.crt": f.crt, "client.key": f.key} {
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
	}
}

// readClientFiles reads the three files; rotate-ca replaces each atomically, but not all at once,
// so a read that finds a key pair that does not match is retried by the caller.
func readClientFiles(dir string) (clientFiles, error) {
	var (
		f   clientFiles
		err error
	)

	if f.ca, err = os.ReadFile(filepath.Join(dir, "ca.crt")); err != nil {
		return f, err
	}

	if f.crt, err = os.ReadFile(filepath.Join(dir, "client.crt")); err != nil {
		return f, err
	}

	f.key, err = os.ReadFile(filepath.Join(dir, "client.key"))

	return f, err
}

func (f clientFiles) equal(g clientFiles) bool {
	return bytes.Equal(f.ca, g.ca) && bytes.Equal(f.crt, g.crt) && bytes.Equal(f.key, g.key)
}

// followingClient is an etcd client per member whose credentials follow the files in dir.
type followingClient struct {
	dir       string
	endpoints []string
	files     clientFiles
	clients   []*clientv3.Client
	// generations counts the credentials used.
	generations int
}

func newFollowingClient(dir string, endpoints []string) *followingClient {
	return &followingClient{dir: dir, endpoints: endpoints}
}

// refresh reconnects when the files changed; a half-written set (mismatched key pair) keeps the old clients.
func (fc *followingClient) refresh() error {
	files, err := readClientFiles(fc.dir)
	if err != nil {
		return err
	}

	if fc.clients != nil && files.equal(fc.files) {
		return nil
	}

	tlsConfig, err := etcdpkg.TLSConfig(files.ca, files.crt, files.key)
	if err != nil {
		if fc.clients != nil {
			return nil
		}

		return err
	}

	clients := make([]*clientv3.Client, 0, len(fc.endpoints))

	for _, endpoint := range fc.endpoints {
		client, err := etcdpkg.NewClient([]string{endpoint}, tlsConfig)
		if err != nil {
			return err
		}

		clients = append(clients, client)
	}

	fc.close()
	fc.clients = clients
	fc.files = files
	fc.generations++

	return nil
}

func (fc *followingClient) close() {
	for _, c := range fc.clients {
		c.Close()
	}

	fc.clients = nil
}

// load puts and gets through every member in turn, with credentials that follow the client dir.
type load struct {
	cancel  context.CancelFunc
	done    chan struct{}
	acked   []string
	ok      atomic.Int64
	failed  atomic.Int64
	lastErr atomic.Value
	gens    int
	files   clientFiles
}

func startLoad(t testing.TB, dir string, endpoints []string) *load {
	t.Helper()

	ctx, cancel := context.WithCancel(context.Background())
	l := &load{cancel: cancel, done: make(chan struct{})}
	fc := newFollowingClient(dir, endpoints)

	require.NoError(t, fc.refresh())

	go func() {
		defer close(l.done)
		defer fc.close()

		for i := 0; ctx.Err() == nil; i++ {
			if err := fc.refresh(); err != nil {
				l.failed.Add(1)
				l.lastErr.Store(err.Error())

				continue
			}

			key := fmt.Sprintf("/load/%06d", i)
			client := fc.clients[i%len(fc.clients)]

			opCtx, opCancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := client.Put(opCtx, key, key)

			if err == nil {
				l.acked = append(l.acked, key)
				_, err = fc.clients[(i+1)%len(fc.clients)].Get(opCtx, key)
			}

			opCancel()

			if err != nil {
				l.failed.Add(1)
				l.lastErr.Store(err.Error())
			} else {
				l.ok.Add(1)
			}
		}

		l.gens = fc.generations
		l.files = fc.files
	}()

	return l
}

func (l *load) stop() {
	l.cancel()
	<-l.done
}

// prober probes every member's health every probeInterval, each probe on a new connection (a
// kept connection would hide a short outage behind its reconnection), and remembers the fewest
// members healthy at once and the longest outage of a member.
type prober struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	probes   int
	minAlive int
	worst    []string
	downs    map[string]int
	// downSince is when each member that is down was first seen down; maxOutage the longest
	// time a member was seen down, from its first failed probe to its next good one.
	downSince map[string]time.Time
	maxOutage time.Duration
}

func startProber(t testing.TB, dir string, endpoints []string) *prober {
	t.Helper()

	ctx, cancel := context.WithCancel(context.Background())
	p := &prober{
		cancel: cancel, done: make(chan struct{}), minAlive: len(endpoints),
		downs: map[string]int{}, downSince: map[string]time.Time{},
	}
	fc := newFollowingClient(dir, endpoints)

	require.NoError(t, fc.refresh())

	go func() {
		defer close(p.done)
		defer fc.close()

		tick := time.NewTicker(probeInterval)
		defer tick.Stop()

		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}

			sent := time.Now()

			fc.refresh() //nolint:errcheck // a failed refresh keeps the current clients

			results := make([]error, len(endpoints))

			var wg sync.WaitGroup

			tlsConfig, tlsErr := etcdpkg.TLSConfig(fc.files.ca, fc.files.crt, fc.files.key)

			for i, endpoint := range endpoints {
				wg.Go(func() {
					if tlsErr != nil {
						results[i] = tlsErr

						return
					}

					client, err := etcdpkg.NewClient([]string{endpoint}, tlsConfig)
					if err != nil {
						results[i] = err

						return
					}

					defer client.Close()

					// What `etcdctl endpoint health` does: a linearizable read, which the member
					// serves only as part of a quorum with a leader (it waits through a leader
					// hand-over of a few milliseconds).
					getCtx, cancel := context.WithTimeout(ctx, probeTimeout)
					defer cancel()

					if _, err := client.Get(getCtx, "health"); err != nil {
						results[i] = fmt.Errorf("%s: %w", endpoint, err)
					}
				})
			}

			wg.Wait()

			if ctx.Err() != nil {
				return
			}

			p.record(endpoints, results, sent)
		}
	}()

	return p
}

func (p *prober) record(endpoints []string, results []error, sent time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()

	p.probes++

	alive := 0

	var down []string

	for i, err := range results {
		if err == nil {
			alive++

			if since, ok := p.downSince[endpoints[i]]; ok {
				p.maxOutage = max(p.maxOutage, sent.Sub(since))
				delete(p.downSince, endpoints[i])
			}

			continue
		}

		if _, ok := p.downSince[endpoints[i]]; !ok {
			p.downSince[endpoints[i]] = sent
		}

		p.downs[endpoints[i]]++
		down = append(down, err.Error())
	}

	if alive < p.minAlive {
		p.minAlive = alive
		p.worst = down
	}
}

func (p *prober) stop() {
	p.cancel()
	<-p.done
}
