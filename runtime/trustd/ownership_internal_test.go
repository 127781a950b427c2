package trustd

import (
	"net"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/nodepki/nodepki/pkg/certs"
)

// TestOwnershipLoopbackOnlyForALoopbackRequester covers what an end-to-end test on 127.0.0.0/8
// cannot: a requester on a routable address.
func TestOwnershipLoopbackOnlyForALoopbackRequester(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name      string
		requester string
		profile   certs.Profile
		refused   string
	}{
		{name: "own address", requester: "10.5.0.3", profile: certs.Profile{CommonName: "w", IPAddresses: []net.IP{net.ParseIP("10.5.0.3")}}},
		{name: "IPv4-mapped own address", requester: "10.5.0.3", profile: certs.Profile{CommonName: "w", IPAddresses: []net.IP{net.ParseIP("::ffff:10.5.0.3")}}},
		{name: "loopback IPv4", requester: "10.5.0.3", profile: certs.Profile{CommonName: "w", IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}, refused: "is a loopback address"},
		{name: "loopback IPv6", requester: "fd00::3", profile: certs.Profile{CommonName: "w", IPAddresses: []net.IP{net.ParseIP("::1")}}, refused: "is a loopback address"},
		{name: "localhost", requester: "10.5.0.3", profile: certs.Profile{CommonName: "w", DNSNames: []string{"LocalHost"}}, refused: "names the loopback interface"},
		{name: "loopback requester", requester: "127.0.0.5", profile: certs.Profile{CommonName: "w", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}},
		{name: "a control plane's address under a prefix length", requester: "10.5.0.3", profile: certs.Profile{CommonName: "w", IPAddresses: []net.IP{net.ParseIP("10.5.0.2")}}, refused: "is an address of this control plane"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			o := &ownership{requester: netip.MustParseAddr(tc.requester), ips: map[netip.Addr]string{}, names: map[string]string{}}
			o.add("this control plane", "10.5.0.2/24", "cp-1")

			err := o.checkProfile(tc.profile)
			if tc.refused == "" {
				assert.NoError(t, err)

				return
			}

			assert.ErrorContains(t, err, tc.refused)
		})
	}
}
