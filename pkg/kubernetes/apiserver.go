package kubernetes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// APIServerPort is kube-apiserver's secure port, as in Talos and kubeadm.
const APIServerPort = 6443

// APIServerConfig is what a control plane's kube-apiserver command line is built from.
type APIServerConfig struct {
	// Address is the node address kube-apiserver binds to and advertises.
	Address netip.Addr
	// PKIDir holds the files of APIServerPKI (<state-dir>/secrets/kubernetes).
	PKIDir string
	// EtcdServers are the client URLs of the etcd members.
	EtcdServers []string
	// ServiceSubnets are cluster.network.serviceSubnets (DefaultServiceSubnet when empty).
	ServiceSubnets []string
	// ServiceAccountIssuer is the issuer URL of service-account tokens.
	ServiceAccountIssuer string
}

// Args is kube-apiserver's command line: the certificate flags of APIServerFlags, the address,
// etcd, the service network, RBAC, and the requestheader settings that make the front-proxy
// client (CN front-proxy-client) the one requestheader identity accepted.
func (c APIServerConfig) Args() ([]string, error) {
	var errs []error

	if !c.Address.IsValid() || c.Address.IsUnspecified() {
		errs = append(errs, fmt.Errorf("address %q: want the node's own address", c.Address))
	}

	if c.PKIDir == "" {
		errs = append(errs, errors.New("no PKI directory"))
	}

	if len(c.EtcdServers) == 0 {
		errs = append(errs, errors.New("no etcd servers"))
	}

	for _, server := range c.EtcdServers {
		if u, err := url.Parse(server); err != nil || u.Scheme != "https" || u.Host == "" {
			errs = append(errs, fmt.Errorf("etcd server %q is not an https URL", server))
		}
	}

	subnets := c.ServiceSubnets
	if len(subnets) == 0 {
		subnets = []string{DefaultServiceSubnet}
	}

	for i, subnet := range subnets {
		if _, err := ServiceIP(subnet); err != nil {
			errs = append(errs, fmt.Errorf("cluster.network.serviceSubnets[%d]: %w", i, err))
		}
	}

	if u, err := url.Parse(c.ServiceAccountIssuer); err != nil || u.Scheme != "https" || u.Host == "" {
		errs = append(errs, fmt.Errorf("service-account issuer %q is not an https URL", c.ServiceAccountIssuer))
	}

	if len(errs) > 0 {
		return nil, fmt.Errorf("kube-apiserver configuration: %w", errors.Join(errs...))
	}

	return append(APIServerFlags(c.PKIDir),
		"--bind-address="+c.Address.String(),
		"--advertise-address="+c.Address.String(),
		"--secure-port="+strconv.Itoa(APIServerPort),
		"--etcd-servers="+strings.Join(c.EtcdServers, ","),
		"--service-cluster-ip-range="+strings.Join(subnets, ","),
		"--service-account-issuer="+c.ServiceAccountIssuer,
		"--authorization-mode=Node,RBAC",
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--profiling=false",
	), nil
}

// URL is the https URL of the kube-apiserver on the config's address.
func (c APIServerConfig) URL() string {
	return "https://" + net.JoinHostPort(c.Address.String(), strconv.Itoa(APIServerPort))
}
