// Package pki holds the resources of the "pki" namespace: roots derived from the machine config,
// the trust pools built from them, the node's leaf certificates and their status.
//
// Types holding private keys (RootSecrets, NodeCertificates) are sensitive: only os:admin reads
// them through the API. AcceptedCAs, CertSANs and CertificateStatuses hold no secrets.
package pki

import "github.com/cosi-project/runtime/pkg/resource"

// NamespaceName is the namespace of PKI resources.
const NamespaceName resource.Namespace = "pki"

// Root IDs: one per root of trust in the machine config. RootSecrets and AcceptedCAs use them.
const (
	RootOS             = resource.ID("os")
	RootKubernetes     = resource.ID("kubernetes")
	RootEtcd           = resource.ID("etcd")
	RootAggregator     = resource.ID("aggregator")
	RootServiceAccount = resource.ID("service-account")
)

// Labels of CertificateRequests (both) and NodeCertificates (LabelRoot), so that a change of one
// root's secret or trust pool lists that root's requests and certificates, not every one.
const (
	// LabelRoot is the root of the certificate: one of the root IDs.
	LabelRoot = "nodepki.dev/root"
	// LabelIssuer is the issuer of a request: IssuerLocal or IssuerTrustd.
	LabelIssuer = "nodepki.dev/issuer"
)

// AllRoots lists every root ID in a stable order.
func AllRoots() []resource.ID {
	return []resource.ID{RootOS, RootKubernetes, RootEtcd, RootAggregator, RootServiceAccount}
}

// CertSANs IDs.
const (
	SANsAPI        = resource.ID("api")
	SANsKubernetes = resource.ID("kubernetes")
	SANsEtcd       = resource.ID("etcd")
)

// Leaf certificate IDs: NodeCertificates and CertificateStatuses use them.
const (
	CertAPI                        = resource.ID("api")
	CertAPIClient                  = resource.ID("api-client")
	CertTrustd                     = resource.ID("trustd")
	CertEtcdServer                 = resource.ID("etcd-server")
	CertEtcdPeer                   = resource.ID("etcd-peer")
	CertEtcdClient                 = resource.ID("etcd-client")
	CertEtcdAdmin                  = resource.ID("etcd-admin")
	CertKubeAPIServer              = resource.ID("kube-apiserver")
	CertKubeAPIServerKubeletClient = resource.ID("kube-apiserver-kubelet-client")
	CertFrontProxyClient           = resource.ID("front-proxy-client")
)

// ShortFingerprintLength is how many hex digits of a fingerprint tables show: 48 bits, enough to
// tell apart the handful of CAs a root accepts at once.
const ShortFingerprintLength = 12

// ShortFingerprint is the first ShortFingerprintLength hex digits of a fingerprint, for tables
// and IDs; the spec keeps the full one.
func ShortFingerprint(fingerprint string) string {
	return fingerprint[:min(len(fingerprint), ShortFingerprintLength)]
}
