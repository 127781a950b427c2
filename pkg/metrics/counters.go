package metrics

import (
	"context"
	"fmt"
	"strings"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/resources/pki"
)

// Values of the source label of nodepki_config_applies_total.
const (
	SourceBoot  = "boot"
	SourceApply = "apply"
	SourcePatch = "patch"
)

// unknownMethod stands for a method no linked-in service defines: the method label takes only
// names the binary knows, whatever path a client sends.
const unknownMethod = "unknown"

// Counters are the node's event counters, made before the servers and the runtime that feed them
// (New registers them). Labels carry certificate IDs, root names, gRPC method names and code names
// only.
type Counters struct {
	issuances        *prometheus.CounterVec
	renewals         *prometheus.CounterVec
	issuanceFailures *prometheus.CounterVec
	renewalFailures  *prometheus.CounterVec
	apiRequests      *prometheus.CounterVec
	trustdRequests   *prometheus.CounterVec
	configApplies    *prometheus.CounterVec
}

// NewCounters makes the node's counters.
func NewCounters() *Counters {
	leaf := []string{"root", "id"}

	c := &Counters{
		issuances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodepki_certificate_issuances_total",
			Help: "First certificates of a leaf published while this process runs.",
		}, leaf),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodepki_certificate_renewals_total",
			Help: "Leaf certificates replaced by a new one (new serial) while this process runs.",
		}, leaf),
		issuanceFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodepki_certificate_issuance_failures_total",
			Help: "Times a leaf without a certificate reported a new error (lastError set or changed).",
		}, leaf),
		renewalFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodepki_certificate_renewal_failures_total",
			Help: "Times a leaf holding a certificate reported a new error renewing it (lastError set or changed).",
		}, leaf),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodepki_api_requests_total",
			Help: "Node API calls served, by full gRPC method name (\"unknown\" for a method no service defines) and gRPC code.",
		}, []string{"method", "code"}),
		trustdRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodepki_trustd_requests_total",
			Help: "trustd certificate requests served, by result (the gRPC code: OK, PermissionDenied, ResourceExhausted...).",
		}, []string{"result"}),
		configApplies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nodepki_config_applies_total",
			Help: "Machine configs written, by source: boot (--config on first boot), apply (a whole document) or patch.",
		}, []string{"source"}),
	}

	// Known label values start at zero, so that rate() and increase() see the first event.
	for _, source := range []string{SourceBoot, SourceApply, SourcePatch} {
		c.configApplies.WithLabelValues(source)
	}

	return c
}

func (c *Counters) collectors() []prometheus.Collector {
	return []prometheus.Collector{
		c.issuances, c.renewals, c.issuanceFailures, c.renewalFailures,
		c.apiRequests, c.trustdRequests, c.configApplies,
	}
}

// APIStreamInterceptor counts every call of the node API's public server by method and code. It
// goes first in the chain, so that calls refused by authorization or forwarding count too.
func (c *Counters) APIStreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		c.apiRequests.WithLabelValues(knownMethod(info.FullMethod), status.Code(err).String()).Inc()

		return err
	}
}

// ConfigApplyInterceptor counts the ApplyConfiguration calls that wrote a new machine config, by
// source (apply or patch); dry runs, unchanged configs and refused calls write nothing.
func (c *Counters) ConfigApplyInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		if err != nil || info.FullMethod != nodeapi.NodeService_ApplyConfiguration_FullMethodName {
			return resp, err
		}

		apply, okReq := req.(*nodeapi.ApplyConfigurationRequest)
		result, okResp := resp.(*nodeapi.ApplyConfigurationResponse)

		if okReq && okResp && !apply.GetDryRun() && result.GetChanged() {
			source := SourceApply
			if len(apply.GetPatches()) > 0 {
				source = SourcePatch
			}

			c.ConfigApplied(source)
		}

		return resp, err
	}
}

// ConfigApplied counts a machine config written from source (SourceBoot, SourceApply, SourcePatch).
func (c *Counters) ConfigApplied(source string) {
	c.configApplies.WithLabelValues(source).Inc()
}

// TrustdUnaryInterceptor counts trustd requests by result. It goes first in the chain, so that
// rate-limited requests count (ResourceExhausted). Its series appear with the first request: the
// interceptor is made before the node knows whether it serves trustd, and a worker shows none.
func (c *Counters) TrustdUnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		c.trustdRequests.WithLabelValues(status.Code(err).String()).Inc()

		return resp, err
	}
}

// knownMethod returns fullMethod ("/package.Service/Method") when a linked-in service defines it.
func knownMethod(fullMethod string) string {
	service, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok || !protoreflect.FullName(service).IsValid() || !protoreflect.Name(method).IsValid() {
		return unknownMethod
	}

	desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service + "." + method))
	if err != nil {
		return unknownMethod
	}

	if _, ok = desc.(protoreflect.MethodDescriptor); !ok {
		return unknownMethod
	}

	return fullMethod
}

// leafSeen is what the observer remembers of a CertificateStatus.
type leafSeen struct {
	serial    string
	lastError string
}

// ObserveCertificates starts counting issuances, renewals and their failures from the node's
// CertificateStatuses and returns the function that counts until ctx is done: a new serial is an
// issuance (none before) or a renewal, a new lastError a failure. The watch is established before
// it returns, so that starting it before the controllers run counts their first certificates; what
// exists then is the baseline, not counted. A watch that overruns is established again and
// compared with what was seen.
func (m *Metrics) ObserveCertificates(ctx context.Context) (func() error, error) {
	watchCtx, cancel := context.WithCancel(ctx)

	events, err := m.watchCertificates(watchCtx)
	if err != nil {
		cancel()

		return nil, err
	}

	return func() error {
		seen := map[resource.ID]leafSeen{}

		for {
			m.countEvents(watchCtx, events, seen)
			cancel()

			if ctx.Err() != nil {
				return nil //nolint:nilerr // ctx done is shutting down, not an error
			}

			// The watch overran: watch again.
			watchCtx, cancel = context.WithCancel(ctx)

			if events, err = m.watchCertificates(watchCtx); err != nil {
				cancel()

				return err
			}
		}
	}, nil
}

func (m *Metrics) watchCertificates(ctx context.Context) (<-chan state.Event, error) {
	events := make(chan state.Event)

	kind := resource.NewMetadata(pki.NamespaceName, pki.CertificateStatusesType, "", resource.VersionUndefined)
	if err := m.st.WatchKind(ctx, kind, events, state.WithBootstrapContents(true)); err != nil {
		return nil, fmt.Errorf("error watching CertificateStatuses: %w", err)
	}

	return events, nil
}

// countEvents counts the events of one watch until ctx is done or the watch overruns.
func (m *Metrics) countEvents(ctx context.Context, events <-chan state.Event, seen map[resource.ID]leafSeen) {
	// Until Bootstrapped, the events are the existing resources: a leaf not seen before is baseline.
	bootstrapping := true

	for {
		var ev state.Event

		select {
		case <-ctx.Done():
			return
		case ev = <-events:
		}

		switch ev.Type {
		case state.Errored:
			return
		case state.Destroyed:
			delete(seen, ev.Resource.Metadata().ID())
		case state.Created, state.Updated:
			if res, ok := ev.Resource.(*pki.CertificateStatus); ok {
				m.countLeaf(seen, res, bootstrapping)
			}
		case state.Bootstrapped:
			bootstrapping = false
		case state.Noop:
		}
	}
}

func (m *Metrics) countLeaf(seen map[resource.ID]leafSeen, res *pki.CertificateStatus, bootstrapping bool) {
	id, spec := res.Metadata().ID(), res.TypedSpec()
	now := leafSeen{serial: spec.Serial, lastError: spec.LastError}

	before, known := seen[id]
	seen[id] = now

	if !known && bootstrapping {
		return
	}

	switch {
	case now.serial == before.serial:
	case before.serial == "":
		m.counters.issuances.WithLabelValues(spec.Root, id).Inc()
	default:
		m.counters.renewals.WithLabelValues(spec.Root, id).Inc()
	}

	if now.lastError != "" && now.lastError != before.lastError {
		if now.serial == "" {
			m.counters.issuanceFailures.WithLabelValues(spec.Root, id).Inc()
		} else {
			m.counters.renewalFailures.WithLabelValues(spec.Root, id).Inc()
		}
	}
}
