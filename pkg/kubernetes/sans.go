// Package kubernetes owns what nodepki derives for the Kubernetes control plane from the machine
// config, independent of any controller: the kube-apiserver serving SANs and the layout of the
// files kube-apiserver's flags read.
package kubernetes

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// Talos's defaults for a cluster.network section that leaves them out.
const (
	DefaultDNSDomain     = "cluster.local"
	DefaultServiceSubnet = "10.96.0.0/12"
)

// SANs are the subject alternative names of a certificate, sorted and without duplicates.
type SANs struct {
	DNSNames []string
	IPs      []netip.Addr
}

// APIServerSANs returns the SANs of the kube-apiserver serving certificate of a control plane, as
// Talos issues it: cluster.apiServer.certSANs, the host of cluster.controlPlane.endpoint, the
// in-cluster names of the kubernetes Service (kubernetes, kubernetes.default,
// kubernetes.default.svc, kubernetes.default.svc.<cluster.network.dnsDomain>), the first address of
// each of cluster.network.serviceSubnets (the kubernetes Service's ClusterIP), the node's addresses
// and hostname, and localhost. Every field problem is reported (errors.Join), each naming its field.
func APIServerSANs(c *machineconfig.ClusterSection, nodeAddresses []string, hostname string) (SANs, error) {
	var (
		b    sanBuilder
		errs []error
	)

	if c == nil {
		c = &machineconfig.ClusterSection{}
	}

	if c.APIServer != nil {
		for i, san := range c.APIServer.CertSANs {
			if err := b.addChecked(san, true); err != nil {
				errs = append(errs, fmt.Errorf("cluster.apiServer.certSANs[%d]: %q %w", i, san, err))
			}
		}
	}

	if c.ControlPlane != nil && c.ControlPlane.Endpoint != "" {
		u, err := url.Parse(c.ControlPlane.Endpoint)
		if err != nil || u.Hostname() == "" {
			errs = append(errs, fmt.Errorf("cluster.controlPlane.endpoint: %q has no host: set it to the Kubernetes API URL, e.g. https://cp.example.com:6443", c.ControlPlane.Endpoint))
		} else if err := b.addChecked(u.Hostname(), false); err != nil {
			errs = append(errs, fmt.Errorf("cluster.controlPlane.endpoint: host %q %w", u.Hostname(), err))
		}
	}

	dnsDomain, serviceSubnets := DefaultDNSDomain, []string{DefaultServiceSubnet}

	if n := c.Network; n != nil {
		if n.DNSDomain != "" {
			dnsDomain = strings.TrimSuffix(n.DNSDomain, ".")
		}

		if len(n.ServiceSubnets) > 0 {
			serviceSubnets = n.ServiceSubnets
		}
	}

	if msgs := validation.IsDNS1123Subdomain(dnsDomain); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("cluster.network.dnsDomain: %q is not a DNS domain (%s): set it to a lower-case domain such as %s", dnsDomain, strings.Join(msgs, "; "), DefaultDNSDomain))
	} else {
		b.dns = append(b.dns, "kubernetes.default.svc."+dnsDomain)
	}

	b.dns = append(b.dns, "kubernetes", "kubernetes.default", "kubernetes.default.svc", "localhost")

	for i, subnet := range serviceSubnets {
		ip, err := ServiceIP(subnet)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster.network.serviceSubnets[%d]: %w", i, err))

			continue
		}

		b.ips = append(b.ips, ip)
	}

	for _, addr := range nodeAddresses {
		ip, err := netip.ParseAddr(addr)
		if err != nil {
			errs = append(errs, fmt.Errorf("node address %q is not an IP address: %w", addr, err))

			continue
		}

		b.ips = append(b.ips, ip.Unmap())
	}

	if hostname != "" {
		if err := b.addChecked(hostname, false); err != nil {
			errs = append(errs, fmt.Errorf("hostname %q %w", hostname, err))
		}
	}

	b.ips = append(b.ips, netip.AddrFrom4([4]byte{127, 0, 0, 1}), netip.IPv6Loopback())

	if len(errs) > 0 {
		return SANs{}, errors.Join(errs...)
	}

	return b.sans(), nil
}

// CheckCluster reports the problems of the cluster fields APIServerSANs reads, each naming its
// field, so that a config a control plane could not issue its API server certificate from is
// refused when it is applied.
func CheckCluster(c *machineconfig.ClusterSection) error {
	_, err := APIServerSANs(c, nil, "")

	return err
}

// ServiceIP is the ClusterIP of the kubernetes Service in a service subnet: its network address
// plus one (10.96.0.1 for 10.96.0.0/12).
func ServiceIP(subnet string) (netip.Addr, error) {
	prefix, err := netip.ParsePrefix(subnet)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not a CIDR subnet: write it as address/bits, e.g. %s", subnet, DefaultServiceSubnet)
	}

	prefix = prefix.Masked()

	ip := prefix.Addr().Next()
	if !ip.IsValid() || !prefix.Contains(ip) {
		return netip.Addr{}, fmt.Errorf("%q has no room for the kubernetes Service address: use a larger subnet, e.g. %s", subnet, DefaultServiceSubnet)
	}

	return ip, nil
}

type sanBuilder struct {
	dns []string
	ips []netip.Addr
}

// addChecked adds an IP address or a DNS name (one trailing dot ignored), refusing anything
// else. Wildcards are allowed only where the caller says so: kubeadm allows them in the API
// server's extra SANs, and a client that resolves the cluster by a wildcard name expects it.
func (b *sanBuilder) addChecked(san string, wildcard bool) error {
	name := strings.TrimSuffix(strings.TrimSpace(san), ".")
	if name == "" {
		return errors.New("is empty: remove the entry or set a DNS name or IP address")
	}

	if ip, err := netip.ParseAddr(name); err == nil {
		if ip.IsUnspecified() {
			return errors.New("is the unspecified address, which names no host: use a real address")
		}

		b.ips = append(b.ips, ip.Unmap())

		return nil
	}

	msgs := validation.IsDNS1123Subdomain(name)
	if wildcard && strings.HasPrefix(name, "*.") {
		msgs = validation.IsWildcardDNS1123Subdomain(name)
	}

	if len(msgs) > 0 {
		return fmt.Errorf("is neither an IP address nor a DNS name (%s): use a lower-case DNS name or an IP address", strings.Join(msgs, "; "))
	}

	b.dns = append(b.dns, name)

	return nil
}

func (b *sanBuilder) sans() SANs {
	dns := slices.Clone(b.dns)
	slices.Sort(dns)

	ips := slices.Clone(b.ips)
	slices.SortFunc(ips, netip.Addr.Compare)

	return SANs{DNSNames: slices.Compact(dns), IPs: slices.Compact(ips)}
}

// IPStrings returns the IP SANs as text, in order.
func (s SANs) IPStrings() []string {
	out := make([]string, len(s.IPs))
	for i, ip := range s.IPs {
		out[i] = ip.String()
	}

	return out
}
