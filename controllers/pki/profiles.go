package pki

import (
	stdx509 "crypto/x509"
	"net"
	"net/netip"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// Default leaf lifetimes, as in Talos: node API certificates are short-lived and renewed often,
// etcd and Kubernetes certificates last a year.
const (
	APILifetime        = 24 * time.Hour
	KubernetesLifetime = 365 * 24 * time.Hour
	// MinLifetime bounds lifetime overrides from below: certificate times have a resolution of one
	// second, so a shorter lifetime would be due for renewal as soon as it is issued.
	MinLifetime = 2 * time.Second
)

// leafDefinition describes one leaf certificate of the node and the root that issues it.
type leafDefinition struct {
	id   resource.ID
	root resource.ID
	// controlPlaneOnly leaves are never issued on workers, even if a key were present.
	controlPlaneOnly bool
	lifetime         time.Duration
	// profile builds the profile (without lifetime); ok is false while an input it needs is missing.
	profile func(node nodeIdentity) (p certs.Profile, ok bool)
}

// nodeIdentity is what the profiles draw the subject and SANs from.
type nodeIdentity struct {
	hostname  string
	addresses []string
	sans      map[resource.ID]pki.CertSANSpec
}

const (
	serverAuth = stdx509.ExtKeyUsageServerAuth
	clientAuth = stdx509.ExtKeyUsageClientAuth

	digitalSignature = stdx509.KeyUsageDigitalSignature
	keyEncipherment  = stdx509.KeyUsageKeyEncipherment
)

// leafDefinitions lists every leaf certificate, in issuance order (Talos's profiles, reference §5.3-5.6).
var leafDefinitions = []leafDefinition{
	{
		id: pki.CertAPI, root: pki.RootOS, lifetime: APILifetime,
		profile: withSANs(pki.SANsAPI, certs.Profile{KeyUsage: digitalSignature, ExtKeyUsage: eku(serverAuth)}),
	},
	{
		id: pki.CertAPIClient, root: pki.RootOS, controlPlaneOnly: true, lifetime: APILifetime,
		profile: fixed(certs.Profile{Organization: []string{"os:impersonator"}, KeyUsage: digitalSignature, ExtKeyUsage: eku(clientAuth)}, true),
	},
	{
		id: pki.CertTrustd, root: pki.RootOS, controlPlaneOnly: true, lifetime: APILifetime,
		profile: withSANs(pki.SANsAPI, certs.Profile{KeyUsage: digitalSignature | keyEncipherment, ExtKeyUsage: eku(serverAuth)}),
	},
	{
		id: pki.CertEtcdServer, root: pki.RootEtcd, controlPlaneOnly: true, lifetime: KubernetesLifetime,
		profile: withSANs(pki.SANsEtcd, certs.Profile{KeyUsage: digitalSignature | keyEncipherment, ExtKeyUsage: eku(serverAuth, clientAuth)}),
	},
	{
		id: pki.CertEtcdPeer, root: pki.RootEtcd, controlPlaneOnly: true, lifetime: KubernetesLifetime,
		profile: etcdPeerProfile,
	},
	{
		id: pki.CertEtcdClient, root: pki.RootEtcd, controlPlaneOnly: true, lifetime: KubernetesLifetime,
		profile: fixed(certs.Profile{CommonName: "kube-apiserver", KeyUsage: digitalSignature | keyEncipherment, ExtKeyUsage: eku(clientAuth)}, false),
	},
	{
		// nodepkid's own etcd client (member add, health, snapshots, the restart lock): admin.crt.
		id: pki.CertEtcdAdmin, root: pki.RootEtcd, controlPlaneOnly: true, lifetime: KubernetesLifetime,
		profile: fixed(certs.Profile{CommonName: "nodepki", KeyUsage: digitalSignature | keyEncipherment, ExtKeyUsage: eku(clientAuth)}, false),
	},
	{
		id: pki.CertKubeAPIServer, root: pki.RootKubernetes, controlPlaneOnly: true, lifetime: KubernetesLifetime,
		profile: withSANs(pki.SANsKubernetes, certs.Profile{
			CommonName: "kube-apiserver", Organization: []string{"kube-master"},
			KeyUsage: digitalSignature | keyEncipherment, ExtKeyUsage: eku(serverAuth),
		}),
	},
	{
		id: pki.CertKubeAPIServerKubeletClient, root: pki.RootKubernetes, controlPlaneOnly: true, lifetime: KubernetesLifetime,
		profile: fixed(certs.Profile{
			CommonName: "apiserver-kubelet-client", Organization: []string{"system:masters"},
			KeyUsage: digitalSignature | keyEncipherment, ExtKeyUsage: eku(clientAuth),
		}, false),
	},
	{
		id: pki.CertFrontProxyClient, root: pki.RootAggregator, controlPlaneOnly: true, lifetime: KubernetesLifetime,
		profile: fixed(certs.Profile{CommonName: "front-proxy-client", KeyUsage: digitalSignature | keyEncipherment, ExtKeyUsage: eku(clientAuth)}, false),
	},
}

func eku(usages ...stdx509.ExtKeyUsage) []stdx509.ExtKeyUsage {
	return usages
}

// fixed is a profile without SANs; hostnameCN sets the common name to the node's hostname.
func fixed(base certs.Profile, hostnameCN bool) func(nodeIdentity) (certs.Profile, bool) {
	return func(node nodeIdentity) (certs.Profile, bool) {
		p := base

		if hostnameCN {
			p.CommonName = node.hostname
		}

		return p, true
	}
}

// withSANs is a server profile with the SANs of one CertSAN; the common name is the hostname
// unless the profile has its own.
func withSANs(sansID resource.ID, base certs.Profile) func(nodeIdentity) (certs.Profile, bool) {
	return func(node nodeIdentity) (certs.Profile, bool) {
		sans, ok := node.sans[sansID]
		if !ok {
			return certs.Profile{}, false
		}

		p := base

		if p.CommonName == "" {
			p.CommonName = node.hostname
		}

		p.DNSNames = sans.DNSNames
		p.IPAddresses = parseIPs(sans.IPs)

		return p, true
	}
}

// etcdPeerProfile: etcd members reach each other on the node's own addresses and hostname only.
func etcdPeerProfile(node nodeIdentity) (certs.Profile, bool) {
	p := certs.Profile{
		CommonName:  node.hostname,
		IPAddresses: parseIPs(node.addresses),
		KeyUsage:    digitalSignature | keyEncipherment,
		ExtKeyUsage: eku(serverAuth, clientAuth),
	}

	if node.hostname != "" {
		p.DNSNames = []string{node.hostname}
	}

	return p, true
}

func parseIPs(ips []string) []net.IP {
	out := make([]net.IP, 0, len(ips))

	for _, ip := range ips {
		if addr, err := netip.ParseAddr(ip); err == nil {
			out = append(out, net.IP(addr.AsSlice()))
		}
	}

	return out
}

// plannedLeaf is a leaf certificate this node should hold, with its full profile.
type plannedLeaf struct {
	id      resource.ID
	root    resource.ID
	profile certs.Profile
	// ready is false while an input of the profile is missing; the leaf is kept but not (re)issued.
	ready bool
}

// planLeaves lists the leaves this node issues itself: those whose root has an issuing key here,
// and only api on a node that is not a control plane.
func planLeaves(controlPlane bool, roots map[resource.ID]pki.RootSecretSpec, node nodeIdentity, lifetimes map[resource.ID]time.Duration) []plannedLeaf {
	var out []plannedLeaf

	for _, def := range leafDefinitions {
		root, ok := roots[def.root]
		if !ok || root.IssuingCert == "" || root.IssuingKey == "" {
			continue
		}

		if def.controlPlaneOnly && !controlPlane {
			continue
		}

		profile, ready := def.profile(node)

		profile.Lifetime = def.lifetime
		if lifetime, ok := lifetimes[def.id]; ok && lifetime > 0 {
			profile.Lifetime = max(lifetime, MinLifetime)
		}

		out = append(out, plannedLeaf{id: def.id, root: def.root, profile: profile, ready: ready})
	}

	return out
}
