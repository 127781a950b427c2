package pki

import (
	"net/netip"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"

	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// family is the lifetime family of a leaf: which machine.certificateLifetimes field sets it.
type family int

const (
	familyAPI family = iota
	familyEtcd
	familyKubernetes
)

func (f family) lifetime(l *machineconfig.CertificateLifetimes) time.Duration {
	switch f {
	case familyEtcd:
		return l.EtcdLifetime()
	case familyKubernetes:
		return l.KubernetesLifetime()
	default:
		return l.APILifetime()
	}
}

// leafDefinition describes one leaf certificate of the node and the root that issues it.
type leafDefinition struct {
	id     resource.ID
	root   resource.ID
	family family
	// workers also hold the leaf, obtained from trustd; others are control plane only.
	workers bool
	// sans is the CertSAN set of a server certificate, "" for none.
	sans resource.ID
	// hostnameCN sets the common name to the node's hostname (also when sans is set).
	hostnameCN bool
	// peer: the SANs are the node's own addresses and hostname (etcd members reach each other so).
	peer bool
	base pki.CertificateRequestSpec
}

const (
	serverAuth = pki.ExtKeyUsageServerAuth
	clientAuth = pki.ExtKeyUsageClientAuth

	digitalSignature = pki.KeyUsageDigitalSignature
	keyEncipherment  = pki.KeyUsageKeyEncipherment
)

// leafDefinitions lists every leaf certificate (Talos's profiles, reference §5.3-5.6). Adding a
// certificate is adding an entry here (and its ID in resources/pki).
func leafDefinitions() []leafDefinition {
	return []leafDefinition{
		{
			id: pki.CertAPI, root: pki.RootOS, family: familyAPI, workers: true, sans: pki.SANsAPI, hostnameCN: true,
			base: pki.CertificateRequestSpec{KeyUsage: []string{digitalSignature}, ExtKeyUsage: []string{serverAuth}},
		},
		{
			id: pki.CertAPIClient, root: pki.RootOS, family: familyAPI, hostnameCN: true,
			base: pki.CertificateRequestSpec{Organization: []string{"os:impersonator"}, KeyUsage: []string{digitalSignature}, ExtKeyUsage: []string{clientAuth}},
		},
		{
			id: pki.CertTrustd, root: pki.RootOS, family: familyAPI, sans: pki.SANsAPI, hostnameCN: true,
			base: pki.CertificateRequestSpec{KeyUsage: []string{digitalSignature, keyEncipherment}, ExtKeyUsage: []string{serverAuth}},
		},
		{
			id: pki.CertEtcdServer, root: pki.RootEtcd, family: familyEtcd, sans: pki.SANsEtcd, hostnameCN: true,
			base: pki.CertificateRequestSpec{KeyUsage: []string{digitalSignature, keyEncipherment}, ExtKeyUsage: []string{serverAuth, clientAuth}},
		},
		{
			id: pki.CertEtcdPeer, root: pki.RootEtcd, family: familyEtcd, peer: true, hostnameCN: true,
			base: pki.CertificateRequestSpec{KeyUsage: []string{digitalSignature, keyEncipherment}, ExtKeyUsage: []string{serverAuth, clientAuth}},
		},
		{
			id: pki.CertEtcdClient, root: pki.RootEtcd, family: familyEtcd,
			base: pki.CertificateRequestSpec{CommonName: "kube-apiserver", KeyUsage: []string{digitalSignature, keyEncipherment}, ExtKeyUsage: []string{clientAuth}},
		},
		{
			// nodepkid's own etcd client (member add, health, snapshots, the restart lock): admin.crt.
			id: pki.CertEtcdAdmin, root: pki.RootEtcd, family: familyEtcd,
			base: pki.CertificateRequestSpec{CommonName: "nodepki", KeyUsage: []string{digitalSignature, keyEncipherment}, ExtKeyUsage: []string{clientAuth}},
		},
		{
			id: pki.CertKubeAPIServer, root: pki.RootKubernetes, family: familyKubernetes, sans: pki.SANsKubernetes,
			base: pki.CertificateRequestSpec{
				CommonName: "kube-apiserver", Organization: []string{"kube-master"},
				KeyUsage: []string{digitalSignature, keyEncipherment}, ExtKeyUsage: []string{serverAuth},
			},
		},
		{
			id: pki.CertKubeAPIServerKubeletClient, root: pki.RootKubernetes, family: familyKubernetes,
			base: pki.CertificateRequestSpec{
				CommonName: "apiserver-kubelet-client", Organization: []string{"system:masters"},
				KeyUsage: []string{digitalSignature, keyEncipherment}, ExtKeyUsage: []string{clientAuth},
			},
		},
		{
			id: pki.CertFrontProxyClient, root: pki.RootAggregator, family: familyKubernetes,
			base: pki.CertificateRequestSpec{CommonName: "front-proxy-client", KeyUsage: []string{digitalSignature, keyEncipherment}, ExtKeyUsage: []string{clientAuth}},
		},
	}
}

// nodeIdentity is what the requests draw the subject and SANs from.
type nodeIdentity struct {
	hostname  string
	addresses []netip.Addr
	sans      map[resource.ID]pki.CertSANSpec
}

// request builds the request of def for the node; ok is false while the SANs it needs are missing.
func (def leafDefinition) request(node nodeIdentity, lifetimes *machineconfig.CertificateLifetimes) (spec pki.CertificateRequestSpec, ok bool) {
	spec = def.base.DeepCopy()
	spec.Root = def.root
	spec.Issuer = pki.IssuerLocal
	spec.Lifetime = def.family.lifetime(lifetimes)

	if def.hostnameCN {
		spec.CommonName = node.hostname
	}

	switch {
	case def.sans != "":
		sans, ok := node.sans[def.sans]
		if !ok {
			return pki.CertificateRequestSpec{}, false
		}

		spec.DNSNames = sans.DNSNames
		spec.IPAddresses = sans.IPs
	case def.peer:
		spec.IPAddresses = node.addresses

		if node.hostname != "" {
			spec.DNSNames = []string{node.hostname}
		}
	}

	return spec.DeepCopy(), true
}
