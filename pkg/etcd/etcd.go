// Package etcd owns running an etcd member as a supervised process (its arguments, its own
// process group, the pidfile that lets a restarted supervisor adopt it) and the etcd client calls
// nodepki makes: health, membership, snapshots and the cluster-wide restart lock.
package etcd

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Ports of an etcd member, as in Talos.
const (
	ClientPort = 2379
	PeerPort   = 2380
)

// File names under the PKI directory (<state-dir>/secrets/etcd), Talos's layout.
const (
	CAFile         = "ca.crt"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
	PeerCertFile   = "peer.crt"
	PeerKeyFile    = "peer.key"
	AdminCertFile  = "admin.crt"
	AdminKeyFile   = "admin.key"
)

// ClientURL is the client URL of the member on address.
func ClientURL(address netip.Addr) string {
	return "https://" + net.JoinHostPort(address.String(), strconv.Itoa(ClientPort))
}

// PeerURL is the peer URL of the member on address.
func PeerURL(address netip.Addr) string {
	return "https://" + net.JoinHostPort(address.String(), strconv.Itoa(PeerPort))
}

// MemberName is the etcd name of the member on address: the address, which is unique in the
// cluster where hostnames need not be (a local cluster shares one).
func MemberName(address netip.Addr) string {
	return address.String()
}

// FormatID formats an etcd member ID the way etcdctl prints it.
func FormatID(id uint64) string {
	return strconv.FormatUint(id, 16)
}

// InitialCluster builds etcd's --initial-cluster value from member names and peer URLs.
func InitialCluster(members map[string][]string) string {
	var parts []string

	for name, urls := range members {
		for _, u := range urls {
			parts = append(parts, fmt.Sprintf("%s=%s", name, u))
		}
	}

	slices.Sort(parts)

	return strings.Join(parts, ",")
}
