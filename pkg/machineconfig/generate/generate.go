// Package generate owns machine config generation: the control-plane and worker configs of a
// cluster from its secrets bundle, with the fields and layout Talos's generator emits for them.
//
// It is a package of its own because the bundle package builds on machineconfig's PEM types.
package generate

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"

	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// Kubernetes network defaults, as Talos's.
const (
	DNSDomain          = "cluster.local"
	IPv4PodSubnet      = "10.244.0.0/16"
	IPv4ServiceSubnet  = "10.96.0.0/12"
	IPv6PodSubnet      = "fc00:db8:10::/56"
	IPv6ServiceSubnet  = "fc00:db8:20::/112"
	endpointURLExample = "https://cp.example.com:6443"
)

// Input is what a cluster's configs are generated from.
type Input struct {
	ClusterName string
	// Endpoint is the Kubernetes API URL, e.g. https://cp.example.com:6443.
	Endpoint string
	Bundle   *bundle.Bundle
	// AdditionalSANs go to machine.certSANs (node API certificate) of both configs and to
	// cluster.apiServer.certSANs of the control plane.
	AdditionalSANs []string
}

// Generate returns the control-plane and worker configs of a cluster. Both are validated.
func Generate(in Input) (controlPlane, worker *machineconfig.Config, err error) {
	endpoint, err := checkInput(in)
	if err != nil {
		return nil, nil, err
	}

	b := in.Bundle

	podSubnet, serviceSubnet := IPv4PodSubnet, IPv4ServiceSubnet
	if addr, err := netip.ParseAddr(endpoint.Hostname()); err == nil && addr.Is6() {
		podSubnet, serviceSubnet = IPv6PodSubnet, IPv6ServiceSubnet
	}

	network := &machineconfig.ClusterNetwork{DNSDomain: DNSDomain, PodSubnets: []string{podSubnet}, ServiceSubnets: []string{serviceSubnet}}
	sans := slices.Clone(in.AdditionalSANs)

	cp := document{
		Version: machineconfig.Version,
		Persist: true,
		Machine: machine{
			Type:     machineconfig.TypeControlPlane,
			Token:    b.TrustdInfo.Token,
			CA:       b.Certs.OS,
			CertSANs: sans,
		},
		Cluster: cluster{
			ID:                        b.Cluster.ID,
			Secret:                    b.Cluster.Secret,
			ControlPlane:              machineconfig.ControlPlane{Endpoint: in.Endpoint},
			ClusterName:               in.ClusterName,
			Network:                   network,
			Token:                     b.Secrets.BootstrapToken,
			SecretboxEncryptionSecret: b.Secrets.SecretboxEncryptionSecret,
			AESCBCEncryptionSecret:    b.Secrets.AESCBCEncryptionSecret,
			CA:                        b.Certs.K8s,
			AggregatorCA:              b.Certs.K8sAggregator,
			ServiceAccount:            b.Certs.K8sServiceAccount,
			APIServer:                 &machineconfig.APIServer{CertSANs: append([]string{endpoint.Hostname()}, sans...)},
			Etcd:                      &etcd{CA: b.Certs.Etcd},
		},
	}

	w := document{
		Version: machineconfig.Version,
		Persist: true,
		Machine: machine{
			Type:     machineconfig.TypeWorker,
			Token:    b.TrustdInfo.Token,
			CA:       &machineconfig.CertificateAndKey{Crt: b.Certs.OS.Crt},
			CertSANs: sans,
		},
		Cluster: cluster{
			ID:           b.Cluster.ID,
			Secret:       b.Cluster.Secret,
			ControlPlane: machineconfig.ControlPlane{Endpoint: in.Endpoint},
			ClusterName:  in.ClusterName,
			Network:      network,
			Token:        b.Secrets.BootstrapToken,
			CA:           &machineconfig.CertificateAndKey{Crt: b.Certs.K8s.Crt},
		},
	}

	if controlPlane, err = build(cp); err != nil {
		return nil, nil, fmt.Errorf("control-plane config: %w", err)
	}

	if worker, err = build(w); err != nil {
		return nil, nil, fmt.Errorf("worker config: %w", err)
	}

	return controlPlane, worker, nil
}

func checkInput(in Input) (*url.URL, error) {
	if in.ClusterName == "" {
		return nil, errors.New("cluster name is empty: give the cluster a name")
	}

	endpoint, err := url.Parse(in.Endpoint)
	if err != nil || endpoint.Scheme != "https" || endpoint.Hostname() == "" {
		return nil, fmt.Errorf("endpoint %q is not an https URL: give the Kubernetes API URL, e.g. %s", in.Endpoint, endpointURLExample)
	}

	b := in.Bundle
	if b == nil {
		return nil, errors.New("no secrets bundle given")
	}

	var missing []error

	for _, part := range []struct {
		field   string
		present bool
	}{
		{"cluster", b.Cluster != nil},
		{"secrets", b.Secrets != nil},
		{"trustdinfo", b.TrustdInfo != nil},
		{"certs.os", b.Certs != nil && b.Certs.OS != nil},
		{"certs.k8s", b.Certs != nil && b.Certs.K8s != nil},
		{"certs.k8saggregator", b.Certs != nil && b.Certs.K8sAggregator != nil},
		{"certs.k8sserviceaccount", b.Certs != nil && b.Certs.K8sServiceAccount != nil},
		{"certs.etcd", b.Certs != nil && b.Certs.Etcd != nil},
	} {
		if !part.present {
			missing = append(missing, fmt.Errorf("secrets bundle: %s is missing: regenerate the bundle with `nodepkictl gen secrets`", part.field))
		}
	}

	if len(missing) > 0 {
		return nil, errors.Join(missing...)
	}

	return endpoint, nil
}

func build(doc document) (*machineconfig.Config, error) {
	data, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("error encoding: %w", err)
	}

	cfg, err := machineconfig.Parse(data)
	if err != nil {
		return nil, err
	}

	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("generated config is invalid (check the secrets bundle): %w", err)
	}

	return cfg, nil
}

// document is the generated v1alpha1 document, fields in Talos's order.
type document struct {
	Version string  `yaml:"version"`
	Debug   bool    `yaml:"debug"`
	Persist bool    `yaml:"persist"`
	Machine machine `yaml:"machine"`
	Cluster cluster `yaml:"cluster"`
}

type machine struct {
	Type     string                           `yaml:"type"`
	Token    string                           `yaml:"token"`
	CA       *machineconfig.CertificateAndKey `yaml:"ca"`
	CertSANs []string                         `yaml:"certSANs"`
}

type cluster struct {
	ID                        string                           `yaml:"id"`
	Secret                    string                           `yaml:"secret"`
	ControlPlane              machineconfig.ControlPlane       `yaml:"controlPlane"`
	ClusterName               string                           `yaml:"clusterName"`
	Network                   *machineconfig.ClusterNetwork    `yaml:"network"`
	Token                     string                           `yaml:"token"`
	SecretboxEncryptionSecret string                           `yaml:"secretboxEncryptionSecret,omitempty"`
	AESCBCEncryptionSecret    string                           `yaml:"aescbcEncryptionSecret,omitempty"`
	CA                        *machineconfig.CertificateAndKey `yaml:"ca"`
	AggregatorCA              *machineconfig.CertificateAndKey `yaml:"aggregatorCA,omitempty"`
	ServiceAccount            *machineconfig.Key               `yaml:"serviceAccount,omitempty"`
	APIServer                 *machineconfig.APIServer         `yaml:"apiServer,omitempty"`
	Etcd                      *etcd                            `yaml:"etcd,omitempty"`
}

type etcd struct {
	CA *machineconfig.CertificateAndKey `yaml:"ca"`
}
