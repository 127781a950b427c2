package ctest

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// CA is a generated root CA.
type CA struct {
	Crt, Key []byte
}

// NewCA generates a root CA with nodepki's profile for the root (os, kubernetes, etcd, aggregator).
func NewCA(t testing.TB, root string) CA {
	t.Helper()

	crt, key, err := certs.NewRootCA(root)
	require.NoError(t, err)

	return CA{Crt: crt, Key: key}
}

// Pair is the machine config form of the CA, with its key.
func (ca CA) Pair() *machineconfig.CertificateAndKey {
	return &machineconfig.CertificateAndKey{Crt: ca.Crt, Key: ca.Key}
}

// CertOnly is the machine config form of the CA without its key, as workers get it.
func (ca CA) CertOnly() *machineconfig.CertificateAndKey {
	return &machineconfig.CertificateAndKey{Crt: ca.Crt}
}

// Accepted is the CA as an acceptedCAs entry.
func (ca CA) Accepted() *machineconfig.Certificate {
	return &machineconfig.Certificate{Crt: ca.Crt}
}

// Fingerprint is the SPKI fingerprint of the CA.
func (ca CA) Fingerprint(t testing.TB) string {
	t.Helper()

	crt, err := certs.ParseCertificate(ca.Crt)
	require.NoError(t, err)

	return certs.Fingerprint(crt)
}

// Secrets are the roots of a cluster.
type Secrets struct {
	OS, Kubernetes, Etcd, Aggregator CA
	ServiceAccount                   []byte
	Token                            string
}

// NewSecrets generates every root of a cluster.
func NewSecrets(t testing.TB) *Secrets {
	t.Helper()

	key, err := certs.NewServiceAccountKey()
	require.NoError(t, err)

	return &Secrets{
		OS:             NewCA(t, certs.RootOS),
		Kubernetes:     NewCA(t, certs.RootKubernetes),
		Etcd:           NewCA(t, certs.RootEtcd),
		Aggregator:     NewCA(t, certs.RootAggregator),
		ServiceAccount: key,
		Token:          "abcdef.0123456789abcdef",
	}
}

// Endpoint is the control plane endpoint of generated control-plane configs.
const Endpoint = "https://cluster.example.test:6443"

// WorkerEndpoint is the control plane endpoint of generated worker configs. A worker dials trustd
// at its host: a name would be looked up through DNS, which no test may reach, and nothing of a
// test listens on this address.
const WorkerEndpoint = "https://127.0.0.1:6443"

// ControlPlane is a control plane config carrying every root with its key.
func ControlPlane(s *Secrets) *machineconfig.Document {
	return &machineconfig.Document{
		Version: "v1alpha1",
		Machine: &machineconfig.MachineSection{
			Type:  machineconfig.TypeControlPlane,
			Token: s.Token,
			CA:    s.OS.Pair(),
		},
		Cluster: &machineconfig.ClusterSection{
			ControlPlane:   &machineconfig.ControlPlane{Endpoint: Endpoint},
			ClusterName:    "test",
			CA:             s.Kubernetes.Pair(),
			AggregatorCA:   s.Aggregator.Pair(),
			ServiceAccount: &machineconfig.Key{Key: s.ServiceAccount},
			Etcd:           &machineconfig.Etcd{CA: s.Etcd.Pair()},
		},
	}
}

// Worker is a worker config: the os and Kubernetes CA certificates without keys, no other roots.
func Worker(s *Secrets) *machineconfig.Document {
	return &machineconfig.Document{
		Version: "v1alpha1",
		Machine: &machineconfig.MachineSection{
			Type:  machineconfig.TypeWorker,
			Token: s.Token,
			CA:    s.OS.CertOnly(),
		},
		Cluster: &machineconfig.ClusterSection{
			ControlPlane: &machineconfig.ControlPlane{Endpoint: WorkerEndpoint},
			ClusterName:  "test",
			CA:           s.Kubernetes.CertOnly(),
		},
	}
}
