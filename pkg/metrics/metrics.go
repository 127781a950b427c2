// Package metrics owns nodepkid's Prometheus metrics: expiry and trust gauges of every leaf
// certificate (CertificateStatuses) and every accepted CA (AcceptedCAs) of the node, computed from
// the state at scrape time; counters of issuances and renewals (observed from the
// CertificateStatuses), of node API and trustd calls (gRPC interceptors) and of config applies;
// and the HTTP handler that serves them.
package metrics

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// Values of the kind label.
const (
	KindLeaf = "leaf"
	KindCA   = "ca"
)

// scrapeTimeout bounds the state reads of one scrape.
const scrapeTimeout = 5 * time.Second

var labels = []string{"root", "id", "kind"}

// Collector reads the node's certificates at every scrape, so that the gauges are never stale and
// nothing is kept between scrapes. Labels carry names and public fingerprints only.
type Collector struct {
	st state.State

	notAfter *prometheus.Desc
	renewAt  *prometheus.Desc
	trusted  *prometheus.Desc
}

// NewCollector returns a collector over the node's state.
func NewCollector(st state.State) *Collector {
	return &Collector{
		st: st,
		notAfter: prometheus.NewDesc("nodepki_certificate_not_after_seconds",
			"NotAfter of the certificate, in seconds since the Unix epoch. id is the certificate ID of a leaf, "+
				"the first 12 hex digits of the SHA-256 SPKI fingerprint of a CA.", labels, nil),
		renewAt: prometheus.NewDesc("nodepki_certificate_renew_at_seconds",
			"When the node renews the leaf certificate, in seconds since the Unix epoch (leaves only).", labels, nil),
		trusted: prometheus.NewDesc("nodepki_certificate_trusted",
			"1 when the leaf chains to a CA its root accepts (always 1 for an accepted CA), else 0.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.notAfter
	ch <- c.renewAt
	ch <- c.trusted
}

// Collect implements prometheus.Collector. A state that cannot be read makes the scrape fail
// (an invalid metric), so that it shows as a failed scrape rather than as missing certificates.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()

	if err := c.collectLeaves(ctx, ch); err != nil {
		ch <- prometheus.NewInvalidMetric(c.notAfter, err)
	}

	if err := c.collectCAs(ctx, ch); err != nil {
		ch <- prometheus.NewInvalidMetric(c.notAfter, err)
	}
}

func (c *Collector) collectLeaves(ctx context.Context, ch chan<- prometheus.Metric) error {
	statuses, err := safe.StateListAll[*pki.CertificateStatus](ctx, c.st)
	if err != nil {
		return fmt.Errorf("error listing CertificateStatuses: %w", err)
	}

	for res := range statuses.All() {
		spec := res.TypedSpec()
		values := []string{spec.Root, res.Metadata().ID(), KindLeaf}

		// A pending certificate has no times yet: only its trust (0) is reported.
		if !spec.NotAfter.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.notAfter, prometheus.GaugeValue, unixSeconds(spec.NotAfter.Time), values...)
		}

		if !spec.RenewAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(c.renewAt, prometheus.GaugeValue, unixSeconds(spec.RenewAt.Time), values...)
		}

		ch <- prometheus.MustNewConstMetric(c.trusted, prometheus.GaugeValue, boolValue(spec.Trusted), values...)
	}

	return nil
}

func (c *Collector) collectCAs(ctx context.Context, ch chan<- prometheus.Metric) error {
	accepted, err := safe.StateListAll[*pki.AcceptedCA](ctx, c.st)
	if err != nil {
		return fmt.Errorf("error listing AcceptedCAs: %w", err)
	}

	for res := range accepted.All() {
		root := res.Metadata().ID()

		// Two CAs of a root may share a key (a CA reissued with its key): the first one counts.
		seen := map[string]bool{}

		for i, p := range res.TypedSpec().Certificates {
			crt, err := certs.ParseCertificate([]byte(p))
			if err != nil {
				return fmt.Errorf("accepted CA %d of root %s cannot be parsed: %w", i+1, root, err)
			}

			id := shortFingerprint(crt)
			if seen[id] {
				continue
			}

			seen[id] = true
			values := []string{root, id, KindCA}

			ch <- prometheus.MustNewConstMetric(c.notAfter, prometheus.GaugeValue, unixSeconds(crt.NotAfter), values...)
			ch <- prometheus.MustNewConstMetric(c.trusted, prometheus.GaugeValue, 1, values...)
		}
	}

	return nil
}

func shortFingerprint(crt *x509.Certificate) string {
	return certs.Fingerprint(crt)[:12]
}

func unixSeconds(t time.Time) float64 {
	return float64(t.Unix())
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}

	return 0
}

// Metrics is one node's metrics: the certificate gauges, the event counters and the Go and
// process collectors, on a registry of its own (no global registry, nothing shared between nodes
// of one process).
type Metrics struct {
	st       state.State
	registry *prometheus.Registry
	counters *Counters
}

// New builds the node's metrics over its state, with its counters.
func New(st state.State, counters *Counters) (*Metrics, error) {
	m := &Metrics{st: st, registry: prometheus.NewRegistry(), counters: counters}

	for _, c := range append([]prometheus.Collector{
		NewCollector(st),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, m.counters.collectors()...) {
		if err := m.registry.Register(c); err != nil {
			return nil, fmt.Errorf("error registering a metrics collector: %w", err)
		}
	}

	return m, nil
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{Registry: m.registry}))

	return mux
}

// Serve serves Handler over plain HTTP on lis until ctx is done.
func (m *Metrics) Serve(ctx context.Context, lis net.Listener) error {
	srv := &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}

	served := make(chan error, 1)

	go func() { served <- srv.Serve(lis) }()

	select {
	case err := <-served:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()

	srv.Shutdown(shutdownCtx) //nolint:errcheck // a scrape cut short at shutdown is of no consequence

	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics server: %w", err)
	}

	return nil
}
