// Package bundle owns the secrets bundle (secrets.yaml): the five roots, tokens and cluster
// secrets from which every machine config of a cluster is generated, in Talos's exact layout.
package bundle

import "github.com/nodepki/nodepki/pkg/machineconfig"

// Bundle is secrets.yaml. YAML keys are the lower-cased field names, as Talos writes them; JSON
// keys are the Go field names, as Talos's JSON form (CABPT, Terraform) has them.
type Bundle struct {
	Cluster    *Cluster    `yaml:"cluster" json:"Cluster"`
	Secrets    *Secrets    `yaml:"secrets" json:"Secrets"`
	TrustdInfo *TrustdInfo `yaml:"trustdinfo" json:"TrustdInfo"`
	Certs      *Certs      `yaml:"certs" json:"Certs"`
}

// Cluster holds the cluster identity.
type Cluster struct {
	ID     string `yaml:"id" json:"Id"`
	Secret string `yaml:"secret" json:"Secret"`
}

// Secrets holds the Kubernetes bootstrap token and encryption secret.
type Secrets struct {
	BootstrapToken            string `yaml:"bootstraptoken" json:"BootstrapToken"`
	SecretboxEncryptionSecret string `yaml:"secretboxencryptionsecret,omitempty" json:"SecretboxEncryptionSecret,omitempty"`
	AESCBCEncryptionSecret    string `yaml:"aescbcencryptionsecret,omitempty" json:"AESCBCEncryptionSecret,omitempty"`
}

// TrustdInfo holds the trustd join token (machine.token).
type TrustdInfo struct {
	Token string `yaml:"token" json:"Token"`
}

// Certs holds the roots: etcd, Kubernetes, aggregator CAs, the service-account key and the OS CA.
type Certs struct {
	Etcd              *machineconfig.CertificateAndKey `yaml:"etcd" json:"Etcd"`
	K8s               *machineconfig.CertificateAndKey `yaml:"k8s" json:"K8s"`
	K8sAggregator     *machineconfig.CertificateAndKey `yaml:"k8saggregator" json:"K8sAggregator"`
	K8sServiceAccount *machineconfig.Key               `yaml:"k8sserviceaccount" json:"K8sServiceAccount"`
	OS                *machineconfig.CertificateAndKey `yaml:"os" json:"OS"`
}
