package network_test

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlnetwork "github.com/nodepki/nodepki/controllers/network"
	"github.com/nodepki/nodepki/resources/network"
)

func ipNet(s string) net.Addr {
	prefix := netip.MustParsePrefix(s)

	return &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen())}
}

func TestNodeAddresses(t *testing.T) {
	t.Parallel()

	hostAddrs := []net.Addr{
		ipNet("127.0.0.1/8"),
		ipNet("::1/128"),
		ipNet("fe80::1/64"),
		ipNet("192.168.1.5/24"),
		ipNet("2001:db8::1/64"),
		ipNet("10.0.0.1/8"),
	}

	for _, tc := range []struct {
		name string
		ctrl *ctrlnetwork.NodeAddressesController
		want []string
	}{
		{
			name: "configured only, sorted and deduplicated",
			ctrl: &ctrlnetwork.NodeAddressesController{Addresses: []netip.Addr{
				netip.MustParseAddr("10.0.0.2"),
				netip.MustParseAddr("10.0.0.1"),
				netip.MustParseAddr("10.0.0.2"),
				netip.MustParseAddr("::ffff:10.0.0.3"),
				netip.MustParseAddr("2001:db8::2"),
			}},
			want: []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::2"},
		},
		{
			name: "nothing configured",
			ctrl: &ctrlnetwork.NodeAddressesController{},
			want: []string{},
		},
		{
			name: "host addresses without loopback and link-local",
			ctrl: &ctrlnetwork.NodeAddressesController{
				Addresses:      []netip.Addr{netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("172.16.0.1")},
				HostAddresses:  true,
				InterfaceAddrs: func() ([]net.Addr, error) { return hostAddrs, nil },
			},
			want: []string{"10.0.0.1", "172.16.0.1", "192.168.1.5", "2001:db8::1"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			env := ctest.Run(t, tc.ctrl)

			rtestutils.AssertResource(env.Ctx, t, env.State, network.CurrentID, func(res *network.NodeAddresses, a *assert.Assertions) {
				a.Equal(tc.want, res.TypedSpec().Addresses)
			})
		})
	}
}

func TestNodeAddressesHostRefresh(t *testing.T) {
	t.Parallel()

	var (
		mu    sync.Mutex
		addrs = []net.Addr{ipNet("192.168.1.5/24")}
		reads int
	)

	env := ctest.Run(t, &ctrlnetwork.NodeAddressesController{
		HostAddresses:         true,
		HostAddressesInterval: 20 * time.Millisecond,
		InterfaceAddrs: func() ([]net.Addr, error) {
			mu.Lock()
			defer mu.Unlock()

			reads++

			return addrs, nil
		},
	})

	rtestutils.AssertResource(env.Ctx, t, env.State, network.CurrentID, func(res *network.NodeAddresses, a *assert.Assertions) {
		a.Equal([]string{"192.168.1.5"}, res.TypedSpec().Addresses)
	})

	// Re-reading unchanged addresses writes nothing.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()

		return reads >= 5
	}, 10*time.Second, 10*time.Millisecond)

	res, err := safe.StateGetByID[*network.NodeAddresses](env.Ctx, env.State, network.CurrentID)
	require.NoError(t, err)
	require.Equal(t, resource.VersionUndefined.Next(), res.Metadata().Version(), "unchanged addresses were rewritten")

	mu.Lock()
	addrs = []net.Addr{ipNet("192.168.1.6/24"), ipNet("192.168.1.5/24")}
	mu.Unlock()

	rtestutils.AssertResource(env.Ctx, t, env.State, network.CurrentID, func(res *network.NodeAddresses, a *assert.Assertions) {
		a.Equal([]string{"192.168.1.5", "192.168.1.6"}, res.TypedSpec().Addresses)
	})
}

func TestNodeAddressesRealHost(t *testing.T) {
	t.Parallel()

	env := ctest.Run(t, &ctrlnetwork.NodeAddressesController{
		Addresses:     []netip.Addr{netip.MustParseAddr("203.0.113.7")},
		HostAddresses: true,
	})

	rtestutils.AssertResource(env.Ctx, t, env.State, network.CurrentID, func(res *network.NodeAddresses, a *assert.Assertions) {
		a.Contains(res.TypedSpec().Addresses, "203.0.113.7")

		for _, s := range res.TypedSpec().Addresses {
			addr := netip.MustParseAddr(s)
			a.False(addr.IsLoopback() || addr.IsLinkLocalUnicast(), "address %s must be left out", s)
		}
	})
}
