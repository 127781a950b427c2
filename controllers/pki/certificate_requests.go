package pki

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/trustd"
	"github.com/nodepki/nodepki/resources/pki"
)

// CertificateRequestsController produces a pki.CertificateRequest for every leaf certificate the
// node must hold: on a control plane every leaf, issued locally; on a worker the node API
// certificate "api", obtained from trustd. The machine type and the lifetimes
// (machine.certificateLifetimes) come from the machine config here, and nowhere else.
type CertificateRequestsController = DerivedController[pki.CertificateRequestSpec, pki.CertificateRequestExtension]

// CertificateRequestsOptions configure a CertificateRequestsController.
type CertificateRequestsOptions struct {
	// Hostname is the node's hostname, the common name of its server certificates.
	Hostname string
	// TrustdEndpoints are extra trustd endpoints (host or host:port) for a worker, tried before
	// the host of cluster.controlPlane.endpoint.
	TrustdEndpoints []string
}

// NewCertificateRequestsController creates a CertificateRequestsController.
func NewCertificateRequestsController(opts CertificateRequestsOptions) *CertificateRequestsController {
	return newDerivedController[pki.CertificateRequestSpec, pki.CertificateRequestExtension]("pki.CertificateRequestsController",
		[]controller.Input{configview.Input(), nodeAddressesInput(), safe.Input[*pki.CertSAN](controller.InputWeak)},
		func(ctx context.Context, r controller.Reader, _ *zap.Logger) (map[resource.ID]pki.CertificateRequestSpec, bool, error) {
			doc, err := configview.Read(ctx, r)
			if err != nil || doc == nil || doc.Machine == nil {
				return nil, err == nil, err
			}

			node := nodeIdentity{hostname: opts.Hostname, sans: map[resource.ID]pki.CertSANSpec{}}

			var ok bool
			if node.addresses, ok, err = readNodeAddresses(ctx, r); err != nil || !ok {
				return nil, false, err
			}

			sans, err := safe.ReaderListAll[*pki.CertSAN](ctx, r)
			if err != nil {
				return nil, false, fmt.Errorf("error listing cert SANs: %w", err)
			}

			for san := range sans.All() {
				node.sans[san.Metadata().ID()] = *san.TypedSpec()
			}

			return certificateRequests(doc, node, opts.TrustdEndpoints)
		}).withLabels(requestLabels)
}

// requestLabels are the labels of a request: its root and its issuer, which the mappers of a
// root's secret and pool list by (requestsOfRoot, certificatesOfRoot).
func requestLabels(spec pki.CertificateRequestSpec) map[string]string {
	return map[string]string{pki.LabelRoot: spec.Root, pki.LabelIssuer: spec.Issuer}
}

// certificateRequests maps the config and the node to its requests; ready is false while a SAN
// set a request needs is missing.
func certificateRequests(doc *machineconfig.Document, node nodeIdentity, extraEndpoints []string) (map[resource.ID]pki.CertificateRequestSpec, bool, error) {
	controlPlane := doc.Machine.IsControlPlane()
	out := map[resource.ID]pki.CertificateRequestSpec{}

	for _, def := range leafDefinitions() {
		if !controlPlane && !def.workers {
			continue
		}

		spec, ok := def.request(node, doc.Machine.CertificateLifetimes)
		if !ok {
			return nil, false, nil
		}

		if !controlPlane {
			spec.Issuer = pki.IssuerTrustd
			spec.TrustdEndpoints = trustdEndpoints(doc, extraEndpoints)
		}

		out[def.id] = spec
	}

	return out, true, nil
}

// trustdEndpoints are the extra endpoints, then the control plane endpoint's host on trustd's port.
func trustdEndpoints(doc *machineconfig.Document, extra []string) []string {
	endpoints := slices.Clone(extra)

	if doc.Cluster != nil && doc.Cluster.ControlPlane != nil {
		host := endpointHost(doc.Cluster.ControlPlane.Endpoint)
		if endpoint := net.JoinHostPort(host, strconv.Itoa(trustd.DefaultPort)); host != "" && !slices.Contains(endpoints, endpoint) {
			endpoints = append(endpoints, endpoint)
		}
	}

	return endpoints
}
