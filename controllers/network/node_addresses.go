package network

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/resources/network"
)

// DefaultHostAddressesInterval is how often the host's interface addresses are re-read.
const DefaultHostAddressesInterval = 30 * time.Second

// NodeAddressesController produces network.NodeAddresses/current: the configured addresses plus,
// if HostAddresses is set, the host's interface addresses, sorted and deduplicated.
type NodeAddressesController struct {
	// Addresses are always part of the node's addresses.
	Addresses []netip.Addr
	// HostAddresses adds the host's non-loopback, non-link-local interface addresses.
	HostAddresses bool
	// HostAddressesInterval overrides DefaultHostAddressesInterval.
	HostAddressesInterval time.Duration
	// InterfaceAddrs overrides net.InterfaceAddrs (tests).
	InterfaceAddrs func() ([]net.Addr, error)
}

// Name implements controller.Controller interface.
func (ctrl *NodeAddressesController) Name() string {
	return "network.NodeAddressesController"
}

// Inputs implements controller.Controller interface.
func (ctrl *NodeAddressesController) Inputs() []controller.Input {
	return nil
}

// Outputs implements controller.Controller interface.
func (ctrl *NodeAddressesController) Outputs() []controller.Output {
	return []controller.Output{{Type: network.NodeAddressesType, Kind: controller.OutputExclusive}}
}

// Run implements controller.Controller interface.
func (ctrl *NodeAddressesController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	// Without host addresses the output never changes after the first pass; a nil channel blocks forever.
	var tick <-chan time.Time

	if ctrl.HostAddresses {
		ticker := time.NewTicker(cmp.Or(ctrl.HostAddressesInterval, DefaultHostAddressesInterval))
		defer ticker.Stop()

		tick = ticker.C
	}

	var previous []string

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-tick:
		}

		addresses, err := ctrl.addresses()
		if err != nil {
			return err
		}

		if err = safe.WriterModify(ctx, r, network.NewNodeAddresses(network.CurrentID), func(res *network.NodeAddresses) error {
			res.TypedSpec().Addresses = addresses

			return nil
		}); err != nil {
			return fmt.Errorf("error updating node addresses: %w", err)
		}

		if !slices.Equal(previous, addresses) {
			logger.Info("node addresses", zap.Strings("addresses", addresses))

			previous = addresses
		}

		r.ResetRestartBackoff()
	}
}

func (ctrl *NodeAddressesController) addresses() ([]string, error) {
	addrs := slices.Clone(ctrl.Addresses)

	if ctrl.HostAddresses {
		host, err := ctrl.hostAddresses()
		if err != nil {
			return nil, err
		}

		addrs = append(addrs, host...)
	}

	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}

	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)

	out := make([]string, 0, len(addrs))

	for _, addr := range addrs {
		if addr.IsValid() {
			out = append(out, addr.String())
		}
	}

	return out, nil
}

func (ctrl *NodeAddressesController) hostAddresses() ([]netip.Addr, error) {
	interfaceAddrs := ctrl.InterfaceAddrs
	if interfaceAddrs == nil {
		interfaceAddrs = net.InterfaceAddrs
	}

	ifAddrs, err := interfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("error reading interface addresses: %w", err)
	}

	var out []netip.Addr

	for _, ifAddr := range ifAddrs {
		ipNet, ok := ifAddr.(*net.IPNet)
		if !ok {
			continue
		}

		addr, ok := netip.AddrFromSlice(ipNet.IP)
		if !ok {
			continue
		}

		addr = addr.Unmap()

		// Loopback and link-local addresses are not how other nodes or clients reach this node,
		// so they have no place in certificate SANs.
		if addr.IsLoopback() || addr.IsLinkLocalUnicast() || addr.IsUnspecified() {
			continue
		}

		out = append(out, addr)
	}

	return out, nil
}
