package pki

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/network"
	"github.com/nodepki/nodepki/resources/pki"
)

// CertSANsController produces the SANs of the node's server certificates: pki.CertSAN "api" on
// every node, "kubernetes" and "etcd" on control planes. The node's hostname is added to every set.
// The "kubernetes" set is the kube-apiserver's, from the cluster section of the config
// (kubernetes.APIServerSANs); a cluster section it cannot be computed from fails the pass with the
// field named, and every SAN set stays as it was.
type CertSANsController = DerivedController[pki.CertSANSpec, pki.CertSANExtension]

// NewCertSANsController creates a CertSANsController for a node named hostname ("" adds none).
func NewCertSANsController(hostname string) *CertSANsController {
	return newDerivedController[pki.CertSANSpec, pki.CertSANExtension]("pki.CertSANsController",
		[]controller.Input{configview.Input(), nodeAddressesInput()},
		func(ctx context.Context, r controller.Reader, _ *zap.Logger) (map[resource.ID]pki.CertSANSpec, bool, error) {
			doc, err := configview.Read(ctx, r)
			if err != nil {
				return nil, false, err
			}

			addresses, ok, err := readNodeAddresses(ctx, r)
			if err != nil || !ok {
				return nil, false, err
			}

			specs, err := certSANs(doc, addresses, hostname)
			if err != nil {
				return nil, false, err
			}

			return specs, true, nil
		})
}

func nodeAddressesInput() controller.Input {
	return controller.Input{
		Namespace: network.NamespaceName,
		Type:      network.NodeAddressesType,
		ID:        optional.Some(network.CurrentID),
		Kind:      controller.InputWeak,
	}
}

// readNodeAddresses returns NodeAddresses/current; ok is false before it exists. An address that
// does not parse is an error: it would otherwise be missing from every certificate.
func readNodeAddresses(ctx context.Context, r controller.Reader) (addresses []netip.Addr, ok bool, err error) {
	res, err := safe.ReaderGetByID[*network.NodeAddresses](ctx, r, network.CurrentID)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil, false, nil
		}

		return nil, false, fmt.Errorf("error reading node addresses: %w", err)
	}

	for _, s := range res.TypedSpec().Addresses {
		addr, err := netip.ParseAddr(s)
		if err != nil {
			return nil, false, fmt.Errorf("node address %q: %w", s, err)
		}

		addresses = append(addresses, addr)
	}

	return addresses, true, nil
}

// certSANs maps the config, node addresses and hostname to the SAN sets of the node.
func certSANs(doc *machineconfig.Document, nodeAddresses []netip.Addr, hostname string) (map[resource.ID]pki.CertSANSpec, error) {
	out := map[resource.ID]pki.CertSANSpec{}

	if doc == nil || doc.Machine == nil {
		return out, nil
	}

	var api sanSet

	api.addAddrs(nodeAddresses)
	api.add(doc.Machine.CertSANs...)
	api.add(hostname)
	out[pki.SANsAPI] = api.spec()

	if !doc.Machine.IsControlPlane() {
		return out, nil
	}

	addresses := make([]string, len(nodeAddresses))
	for i, addr := range nodeAddresses {
		addresses[i] = addr.String()
	}

	apiServer, err := kubernetes.APIServerSANs(doc.Cluster, addresses, hostname)
	if err != nil {
		return nil, fmt.Errorf("error computing the kube-apiserver certificate SANs: %w", err)
	}

	// Already sorted and deduplicated, and never empty (localhost and the loopback addresses).
	out[pki.SANsKubernetes] = pki.CertSANSpec{IPs: apiServer.IPs, DNSNames: apiServer.DNSNames}

	var etcd sanSet

	etcd.addAddrs(nodeAddresses)
	etcd.add("127.0.0.1", "::1", hostname, "localhost")
	out[pki.SANsEtcd] = etcd.spec()

	return out, nil
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

func (s *sanSet) addAddrs(addrs []netip.Addr) {
	for _, addr := range addrs {
		s.ips = append(s.ips, addr.Unmap())
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

	spec := pki.CertSANSpec{IPs: ips, DNSNames: dns}

	if spec.IPs == nil {
		spec.IPs = []netip.Addr{}
	}

	if spec.DNSNames == nil {
		spec.DNSNames = []string{}
	}

	return spec
}
