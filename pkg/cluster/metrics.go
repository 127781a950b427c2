package cluster

import (
	"net"
	"strconv"
)

// MetricsPort is where every node of a local cluster serves Prometheus metrics, on its own
// address (nodepkid --metrics-address <node address>:9180).
const MetricsPort = 9180

// MetricsAddresses are the host:port of every node's /metrics.
func (c *Cluster) MetricsAddresses() []string {
	out := make([]string, 0, len(c.Nodes))
	for _, n := range c.Nodes {
		out = append(out, net.JoinHostPort(n.Address, strconv.Itoa(MetricsPort)))
	}

	return out
}
