package trustd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/network"
	"github.com/nodepki/nodepki/resources/pki"
)

// ownership is who holds which names in the cluster, as this control plane knows it when a
// request arrives: the policy of serverProfile says what a SAN may look like, ownership says
// whether the requester may have it. A forbidden name refuses the whole request (rather than
// being dropped from the certificate), so the worker's NodeCertificate LastError and
// CertificateStatus name it and nothing silently differs from what the worker asked for.
type ownership struct {
	requester netip.Addr
	// ips and names map what belongs to someone else to whose it is.
	ips   map[netip.Addr]string
	names map[string]string
}

// loopbackNames are the names that resolve to the loopback interface.
var loopbackNames = []string{"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}

// ownershipFor reads the owners of names: the configured control planes (Options.ControlPlanes),
// and from the state this control plane (its node addresses and the SANs of its own API
// certificate, hostname included), the control-plane endpoint host of the machine config, and
// every member but the requester's own record.
func (s *Server) ownershipFor(ctx context.Context, requester netip.Addr) (*ownership, error) {
	o := &ownership{requester: requester, ips: map[netip.Addr]string{}, names: map[string]string{}}
	o.add("a configured control plane", s.controlPlanes...)

	addresses, err := safe.StateGetByID[*network.NodeAddresses](ctx, s.state, network.CurrentID)
	if err != nil && !state.IsNotFoundError(err) {
		return nil, fmt.Errorf("error reading this node's addresses: %w", err)
	}

	if err == nil {
		o.add("this control plane", addresses.TypedSpec().Addresses...)
	}

	sans, err := safe.StateGetByID[*pki.CertSAN](ctx, s.state, pki.SANsAPI)
	if err != nil && !state.IsNotFoundError(err) {
		return nil, fmt.Errorf("error reading this node's API SANs: %w", err)
	}

	if err == nil {
		for _, ip := range sans.TypedSpec().IPs {
			o.add("this control plane", ip.String())
		}

		o.add("this control plane", sans.TypedSpec().DNSNames...)
	}

	mc, err := safe.StateGetByID[*config.MachineConfig](ctx, s.state, config.ActiveID)
	if err != nil && !state.IsNotFoundError(err) {
		return nil, fmt.Errorf("error reading the machine config: %w", err)
	}

	if err == nil {
		host, hostErr := s.endpointHost.get(string(mc.TypedSpec().Raw))
		if hostErr != nil {
			return nil, hostErr
		}

		o.add("the control-plane endpoint", host)
	}

	members, err := safe.StateListAll[*cluster.Member](ctx, s.state)
	if err != nil {
		return nil, fmt.Errorf("error listing the cluster members: %w", err)
	}

	for m := range members.All() {
		if id, parseErr := netip.ParseAddr(m.Metadata().ID()); parseErr == nil && id.Unmap() == requester {
			continue
		}

		whose := "member " + m.Metadata().ID()
		if isControlPlaneMember(m) {
			whose = "control plane " + m.Metadata().ID()
		}

		o.add(whose, m.TypedSpec().Addresses...)
		o.add(whose, m.TypedSpec().Hostname)
	}

	return o, nil
}

// isControlPlaneMember tells a control plane's own record (written by the control plane, not by
// trustd) from a worker's.
func isControlPlaneMember(m *cluster.Member) bool {
	return m.Metadata().Owner() != MemberOwner || m.TypedSpec().MachineType != machineconfig.TypeWorker
}

// add records names (IP addresses, with or without a prefix length, or DNS names) as whose.
func (o *ownership) add(whose string, names ...string) {
	for _, name := range names {
		if addr, ok := parseAddr(name); ok {
			if _, taken := o.ips[addr]; !taken {
				o.ips[addr] = whose
			}

			continue
		}

		if name = canonicalName(name); name != "" {
			if _, taken := o.names[name]; !taken {
				o.names[name] = whose
			}
		}
	}
}

// checkProfile refuses a profile naming anything the requester does not own: the requester's own
// address is always allowed; link-local and multicast addresses never are; loopback only for a
// loopback requester; an address or name of a control plane, of the endpoint or of another
// member never. Every refused name is listed.
func (o *ownership) checkProfile(p certs.Profile) error {
	var errs []error

	if whose, taken := o.names[canonicalName(p.CommonName)]; taken {
		errs = append(errs, fmt.Errorf("common name %q is the name of %s", p.CommonName, whose))
	}

	for _, ip := range p.IPAddresses {
		if err := o.checkIP(ip); err != nil {
			errs = append(errs, fmt.Errorf("IP SAN %s %w", ip, err))
		}
	}

	for _, name := range p.DNSNames {
		if err := o.checkName(name); err != nil {
			errs = append(errs, fmt.Errorf("DNS SAN %q %w", name, err))
		}
	}

	if len(errs) > 0 {
		return fmt.Errorf("csr: names this node does not own (request only the node's own addresses and names): %w", errors.Join(errs...))
	}

	return nil
}

func (o *ownership) checkIP(ip net.IP) error {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return errors.New("is not an address")
	}

	addr = addr.Unmap()

	switch {
	case addr == o.requester:
		return nil
	case addr.IsLinkLocalUnicast() || addr.IsLinkLocalMulticast() || addr.IsMulticast() || addr.IsInterfaceLocalMulticast():
		return errors.New("is link-local or multicast: such addresses are never signed")
	case addr.IsLoopback() && !o.requester.IsLoopback():
		return fmt.Errorf("is a loopback address, and the request comes from %s", o.requester)
	}

	if whose, taken := o.ips[addr]; taken {
		return fmt.Errorf("is an address of %s", whose)
	}

	return nil
}

func (o *ownership) checkName(name string) error {
	canonical := canonicalName(name)

	for _, loopback := range loopbackNames {
		if canonical == loopback && !o.requester.IsLoopback() {
			return fmt.Errorf("names the loopback interface, and the request comes from %s", o.requester)
		}
	}

	if whose, taken := o.names[canonical]; taken {
		return fmt.Errorf("is the name of %s", whose)
	}

	return nil
}

// endpointHostOf is the host of cluster.controlPlane.endpoint in a machine config ("" if none).
func endpointHostOf(raw string) (string, error) {
	cfg, err := machineconfig.Parse([]byte(raw))
	if err != nil {
		return "", fmt.Errorf("the machine config cannot be parsed: %w", err)
	}

	doc := cfg.Document()
	if doc.Cluster == nil || doc.Cluster.ControlPlane == nil || doc.Cluster.ControlPlane.Endpoint == "" {
		return "", nil
	}

	u, err := url.Parse(doc.Cluster.ControlPlane.Endpoint)
	if err != nil {
		return "", fmt.Errorf("cluster.controlPlane.endpoint: %w", err)
	}

	return u.Hostname(), nil
}

// parseAddr reads an address with or without a prefix length.
func parseAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)

	if addr, err := netip.ParseAddr(s); err == nil {
		return addr.Unmap().WithZone(""), true
	}

	if prefix, err := netip.ParsePrefix(s); err == nil {
		return prefix.Addr().Unmap().WithZone(""), true
	}

	return netip.Addr{}, false
}

// canonicalName compares DNS names the way resolvers do: case-insensitively, trailing dot aside.
func canonicalName(name string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(name), "."))
}
