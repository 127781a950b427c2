package pki

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/nodepki/nodepki/controllers/configview"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/network"
	"github.com/nodepki/nodepki/resources/pki"
)

// kubernetesServiceIP is the first address of Kubernetes' default service CIDR (10.96.0.0/12): the
// in-cluster address of the API server.
const kubernetesServiceIP = "10.96.0.1"

// CertSANsController produces the SANs of the node's server certificates: pki.CertSAN "api" on
// every node, "kubernetes" and "etcd" on control planes.
type CertSANsController struct {
	// Hostname is the node's hostname; it is added to every SAN set when not empty.
	Hostname string

	config configview.Cache
}

// Name implements controller.Controller interface.
func (ctrl *CertSANsController) Name() string {
	return "pki.CertSANsController"
}

// Inputs implements controller.Controller interface.
func (ctrl *CertSANsController) Inputs() []controller.Input {
	return []controller.Input{
		configview.Input(),
		{
			Namespace: network.NamespaceName,
			Type:      network.NodeAddressesType,
			ID:        optional.Some(network.CurrentID),
			Kind:      controller.InputWeak,
		},
	}
}

// Outputs implements controller.Controller interface.
func (ctrl *CertSANsController) Outputs() []controller.Output {
	return []controller.Output{{Type: pki.CertSANsType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller interface.
func (ctrl *CertSANsController) Run(ctx context.Context, r controller.Runtime, _ *zap.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		}

		doc, err := configview.Read(ctx, r, &ctrl.config)
		if err != nil {
			return err
		}

		addresses, err := safe.ReaderGetByID[*network.NodeAddresses](ctx, r, network.CurrentID)
		if err != nil {
			if state.IsNotFoundError(err) {
				continue
			}

			return fmt.Errorf("error reading node addresses: %w", err)
		}

		r.StartTrackingOutputs()

		for id, spec := range certSANs(doc, addresses.TypedSpec().Addresses, ctrl.Hostname) {
			if err = safe.WriterModify(ctx, r, pki.NewCertSAN(id), func(res *pki.CertSAN) error {
				*res.TypedSpec() = spec

				return nil
			}); err != nil {
				return fmt.Errorf("error updating cert SANs %q: %w", id, err)
			}
		}

		if err = safe.CleanupOutputs[*pki.CertSAN](ctx, r); err != nil {
			return fmt.Errorf("error cleaning up cert SANs: %w", err)
		}
	}
}

// certSANs maps the config, node addresses and hostname to the SAN sets of the node.
func certSANs(doc *machineconfig.Document, nodeAddresses []string, hostname string) map[resource.ID]pki.CertSANSpec {
	out := map[resource.ID]pki.CertSANSpec{}

	if doc == nil || doc.Machine == nil {
		return out
	}

	var api sanSet

	api.add(nodeAddresses...)
	api.add(doc.Machine.CertSANs...)
	api.add(hostname)
	out[pki.SANsAPI] = api.spec()

	if !doc.Machine.IsControlPlane() {
		return out
	}

	var kubernetes sanSet

	if doc.Cluster != nil && doc.Cluster.ControlPlane != nil {
		kubernetes.add(endpointHost(doc.Cluster.ControlPlane.Endpoint))
	}

	kubernetes.add("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", hostname)
	kubernetes.add(nodeAddresses...)
	kubernetes.add("127.0.0.1", kubernetesServiceIP)
	out[pki.SANsKubernetes] = kubernetes.spec()

	var etcd sanSet

	etcd.add(nodeAddresses...)
	etcd.add("127.0.0.1", "::1", hostname, "localhost")
	out[pki.SANsEtcd] = etcd.spec()

	return out
}

// endpointHost is the host part of the control plane endpoint URL, or "" if it has none.
func endpointHost(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return ""
	}

	return u.Hostname()
}

// sanSet splits names into IP addresses and DNS names.
type sanSet struct {
	ips []netip.Addr
	dns []string
}

func (s *sanSet) add(names ...string) {
	for _, name := range names {
		name = strings.TrimSuffix(strings.TrimSpace(name), ".")
		if name == "" {
			continue
		}

		if addr, err := netip.ParseAddr(name); err == nil {
			s.ips = append(s.ips, addr.Unmap())

			continue
		}

		s.dns = append(s.dns, name)
	}
}

// spec returns the sorted, deduplicated SANs.
func (s *sanSet) spec() pki.CertSANSpec {
	ips := slices.Clone(s.ips)
	slices.SortFunc(ips, netip.Addr.Compare)
	ips = slices.Compact(ips)

	dns := slices.Clone(s.dns)
	slices.Sort(dns)
	dns = slices.Compact(dns)

	spec := pki.CertSANSpec{IPs: make([]string, 0, len(ips)), DNSNames: dns}

	for _, ip := range ips {
		spec.IPs = append(spec.IPs, ip.String())
	}

	if spec.DNSNames == nil {
		spec.DNSNames = []string{}
	}

	return spec
}
