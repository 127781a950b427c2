package machineconfig

import (
	"encoding/base64"
	"fmt"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/revocation"
)

// Machine types, as Talos spells them.
const (
	TypeInit         = "init"
	TypeControlPlane = "controlplane"
	TypeWorker       = "worker"
)

// Document is the typed view of the v1alpha1 fields nodepki reads.
//
// It is decoded from the full document, which keeps every field nodepki does not know;
// write through patches (or Generate), never by re-encoding a Document.
type Document struct {
	Version string          `yaml:"version"`
	Machine *MachineSection `yaml:"machine,omitempty"`
	Cluster *ClusterSection `yaml:"cluster,omitempty"`
}

// MachineSection holds the PKI fields of .machine.
type MachineSection struct {
	Type  string `yaml:"type"`
	Token string `yaml:"token"`
	// AcceptedTokens is a nodepki extension: extra trustd tokens accepted besides Token, so the
	// join token can rotate without a window in which workers are refused.
	AcceptedTokens []string           `yaml:"acceptedTokens,omitempty"`
	CA             *CertificateAndKey `yaml:"ca,omitempty"`
	AcceptedCAs    []*Certificate     `yaml:"acceptedCAs,omitempty"`
	CertSANs       []string           `yaml:"certSANs,omitempty"`
	// CertificateLifetimes is a nodepki extension: the lifetime of the node's leaf certificates.
	CertificateLifetimes *CertificateLifetimes `yaml:"certificateLifetimes,omitempty"`
	// RevokedCertificates is a nodepki extension: client credentials the node API refuses.
	RevokedCertificates []revocation.Entry `yaml:"revokedCertificates,omitempty"`
}

// Default leaf lifetimes, as in Talos: node API certificates are short-lived and renewed often,
// etcd and Kubernetes certificates last a year.
const (
	DefaultAPILifetime        = 24 * time.Hour
	DefaultEtcdLifetime       = 365 * 24 * time.Hour
	DefaultKubernetesLifetime = 365 * 24 * time.Hour
	// MinCertificateLifetime bounds machine.certificateLifetimes from below: short enough for
	// tests with real processes, long enough that renewal (at 2/3 of the life) is not immediate.
	MinCertificateLifetime = 10 * time.Second
)

// CertificateLifetimes is .machine.certificateLifetimes: the lifetime of the leaf certificates of
// each family; an unset one keeps its default. api covers the node API, api-client and trustd
// certificates (and what trustd signs for workers), etcd the etcd certificates, kubernetes the
// kube-apiserver and front-proxy certificates.
type CertificateLifetimes struct {
	API        Duration `yaml:"api,omitempty"`
	Etcd       Duration `yaml:"etcd,omitempty"`
	Kubernetes Duration `yaml:"kubernetes,omitempty"`
}

// APILifetime is the lifetime of the node API certificates.
func (l *CertificateLifetimes) APILifetime() time.Duration {
	return l.pick(func(l *CertificateLifetimes) Duration { return l.API }, DefaultAPILifetime)
}

// EtcdLifetime is the lifetime of the etcd certificates.
func (l *CertificateLifetimes) EtcdLifetime() time.Duration {
	return l.pick(func(l *CertificateLifetimes) Duration { return l.Etcd }, DefaultEtcdLifetime)
}

// KubernetesLifetime is the lifetime of the Kubernetes certificates.
func (l *CertificateLifetimes) KubernetesLifetime() time.Duration {
	return l.pick(func(l *CertificateLifetimes) Duration { return l.Kubernetes }, DefaultKubernetesLifetime)
}

func (l *CertificateLifetimes) pick(field func(*CertificateLifetimes) Duration, def time.Duration) time.Duration {
	if l == nil || field(l) == 0 {
		return def
	}

	return time.Duration(field(l))
}

// ClusterSection holds the PKI fields of .cluster.
type ClusterSection struct {
	ID                        string             `yaml:"id,omitempty"`
	Secret                    string             `yaml:"secret,omitempty"`
	ControlPlane              *ControlPlane      `yaml:"controlPlane,omitempty"`
	ClusterName               string             `yaml:"clusterName,omitempty"`
	Network                   *ClusterNetwork    `yaml:"network,omitempty"`
	Token                     string             `yaml:"token,omitempty"`
	SecretboxEncryptionSecret string             `yaml:"secretboxEncryptionSecret,omitempty"`
	AESCBCEncryptionSecret    string             `yaml:"aescbcEncryptionSecret,omitempty"`
	CA                        *CertificateAndKey `yaml:"ca,omitempty"`
	AcceptedCAs               []*Certificate     `yaml:"acceptedCAs,omitempty"`
	AggregatorCA              *CertificateAndKey `yaml:"aggregatorCA,omitempty"`
	// AcceptedAggregatorCAs is a nodepki extension (Talos has none): aggregator CAs trusted
	// besides AggregatorCA, for graceful rotation of the front-proxy root.
	AcceptedAggregatorCAs []*Certificate `yaml:"acceptedAggregatorCAs,omitempty"`
	ServiceAccount        *Key           `yaml:"serviceAccount,omitempty"`
	// AcceptedServiceAccountKeys is a nodepki extension: PEM public (or private) keys whose
	// service-account tokens are still verified, for graceful rotation of the signing key.
	AcceptedServiceAccountKeys []*Key           `yaml:"acceptedServiceAccountKeys,omitempty"`
	APIServer                  *APIServer       `yaml:"apiServer,omitempty"`
	Etcd                       *Etcd            `yaml:"etcd,omitempty"`
	AdminKubeconfig            *AdminKubeconfig `yaml:"adminKubeconfig,omitempty"`
}

// ClusterNetwork is .cluster.network: the Kubernetes DNS domain and subnets.
type ClusterNetwork struct {
	DNSDomain      string   `yaml:"dnsDomain,omitempty"`
	PodSubnets     []string `yaml:"podSubnets,omitempty"`
	ServiceSubnets []string `yaml:"serviceSubnets,omitempty"`
}

// APIServer is the certificate part of .cluster.apiServer.
type APIServer struct {
	// CertSANs are extra SANs of the kube-apiserver serving certificate.
	CertSANs []string `yaml:"certSANs,omitempty"`
}

// AdminKubeconfig is .cluster.adminKubeconfig.
type AdminKubeconfig struct {
	// CertLifetime is the lifetime of the admin client certificate of generated kubeconfigs.
	CertLifetime Duration `yaml:"certLifetime,omitempty"`
}

// ControlPlane is .cluster.controlPlane.
type ControlPlane struct {
	Endpoint string `yaml:"endpoint"`
}

// Etcd is the PKI part of .cluster.etcd.
type Etcd struct {
	CA *CertificateAndKey `yaml:"ca,omitempty"`
	// AcceptedCAs is a nodepki extension: etcd CAs trusted besides CA, for graceful rotation.
	AcceptedCAs []*Certificate `yaml:"acceptedCAs,omitempty"`
}

// CertificateAndKey is a {crt, key} pair of base64-encoded PEM blocks, as in Talos.
type CertificateAndKey struct {
	Crt PEM `yaml:"crt"`
	Key PEM `yaml:"key"`
}

// Certificate is a {crt} entry of base64-encoded PEM, as in acceptedCAs.
type Certificate struct {
	Crt PEM `yaml:"crt"`
}

// Key is a {key} entry of base64-encoded PEM, as in cluster.serviceAccount.
type Key struct {
	Key PEM `yaml:"key"`
}

// Redacted is the placeholder Talos writes for secrets in redacted configs; it is kept verbatim.
const Redacted = "******"

// PEM is PEM text; in YAML it is the standard base64 encoding of that text.
type PEM []byte

// MarshalYAML implements yaml.Marshaler.
func (p PEM) MarshalYAML() (any, error) {
	if string(p) == Redacted {
		return Redacted, nil
	}

	return base64.StdEncoding.EncodeToString(p), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (p *PEM) UnmarshalYAML(node *yaml.Node) error {
	var s string
	if err := node.Decode(&s); err != nil {
		return err
	}

	if s == Redacted {
		*p = PEM(s)

		return nil
	}

	decoded, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not valid base64 (line %d): %w", node.Line, err)
	}

	*p = decoded

	return nil
}

// Duration is a time.Duration written as Go duration text (e.g. 8760h0m0s), as Talos writes it.
type Duration time.Duration

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) {
	return time.Duration(d).String(), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(node *yaml.Node) error {
	var s string
	if err := node.Decode(&s); err != nil {
		return err
	}

	parsed, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("not a duration (line %d): %w", node.Line, err)
	}

	*d = Duration(parsed)

	return nil
}

// IsControlPlane reports whether the machine type may hold CA keys and issue certificates.
func (m *MachineSection) IsControlPlane() bool {
	return m != nil && (m.Type == TypeInit || m.Type == TypeControlPlane)
}
