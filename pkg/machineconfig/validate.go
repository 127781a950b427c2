package machineconfig

import (
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/revocation"
)

// Validate checks the PKI part of the config: Talos's rules plus parseable PEM, CA certificates with
// matching keys, the roots a control plane needs and no CA key on a worker. It reports every problem
// (errors.Join), each naming the field path and what to do.
func (c *Config) Validate() error {
	v := &validator{}
	d := c.doc

	if d.Version != Version {
		v.fail("version", "is %q, want %q: set `version: v1alpha1`", d.Version, Version)
	}

	if d.Machine == nil {
		v.fail("machine", "is missing: add the machine section (type, token, ca)")
	} else {
		v.machine(d.Machine)
	}

	if d.Cluster == nil {
		v.fail("cluster", "is missing: add the cluster section (controlPlane.endpoint, ca, ...)")
	} else {
		v.cluster(d.Cluster, d.Machine.IsControlPlane())
	}

	if d.Machine != nil {
		v.certificateLifetimes(d, time.Now())
	}

	return errors.Join(v.errs...)
}

// certificateLifetimes checks machine.certificateLifetimes: each set lifetime is at least
// MinCertificateLifetime and ends before the CAs that issue with it expire (at now).
func (v *validator) certificateLifetimes(d *Document, now time.Time) {
	lifetimes := d.Machine.CertificateLifetimes
	if lifetimes == nil {
		return
	}

	var cluster ClusterSection
	if d.Cluster != nil {
		cluster = *d.Cluster
	}

	var etcdCA *CertificateAndKey
	if cluster.Etcd != nil {
		etcdCA = cluster.Etcd.CA
	}

	for _, family := range []struct {
		name     string
		lifetime Duration
		issuers  map[string]*CertificateAndKey
	}{
		{"api", lifetimes.API, map[string]*CertificateAndKey{"machine.ca": d.Machine.CA}},
		{"etcd", lifetimes.Etcd, map[string]*CertificateAndKey{"cluster.etcd.ca": etcdCA}},
		{"kubernetes", lifetimes.Kubernetes, map[string]*CertificateAndKey{"cluster.ca": cluster.CA, "cluster.aggregatorCA": cluster.AggregatorCA}},
	} {
		if family.lifetime == 0 {
			continue
		}

		path := "machine.certificateLifetimes." + family.name
		lifetime := time.Duration(family.lifetime)

		if lifetime < MinCertificateLifetime {
			v.fail(path, "%s is shorter than the minimum %s: set at least %s, or remove it for the default", lifetime, MinCertificateLifetime, MinCertificateLifetime)

			continue
		}

		for _, caPath := range slices.Sorted(maps.Keys(family.issuers)) {
			ca := family.issuers[caPath]
			if ca == nil || len(ca.Crt) == 0 {
				continue
			}

			crt, err := certs.ParseCertificate(ca.Crt)
			if err != nil {
				continue // reported with the CA's own field
			}

			if remaining := crt.NotAfter.Sub(now).Truncate(time.Second); lifetime > remaining {
				v.fail(path, "%s is longer than the remaining life of %s.crt (%s, until %s): set at most %s, or rotate the CA first",
					lifetime, caPath, remaining, crt.NotAfter.UTC().Format(time.RFC3339), remaining)
			}
		}
	}
}

type validator struct {
	errs []error
}

func (v *validator) fail(path, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

func (v *validator) machine(m *MachineSection) {
	switch m.Type {
	case TypeInit, TypeControlPlane, TypeWorker:
	case "":
		v.fail("machine.type", "is missing: set it to one of init, controlplane, worker")
	default:
		v.fail("machine.type", "unknown machine type %q: set it to one of init, controlplane, worker", m.Type)
	}

	if m.Token == "" {
		v.fail("machine.token", "the trustd join token is missing: set it to trustdinfo.token of the cluster's secrets.yaml")
	}

	for i, token := range m.AcceptedTokens {
		if token == "" {
			v.fail(fmt.Sprintf("machine.acceptedTokens[%d]", i), "is empty: remove the entry")
		}
	}

	if m.CA == nil && len(m.AcceptedCAs) == 0 {
		v.fail("machine.ca", "an issuing CA or some accepted CAs are required (machine.ca, machine.acceptedCAs): set machine.ca from certs.os of secrets.yaml")
	}

	v.acceptedCAs("machine.acceptedCAs", m.AcceptedCAs)
	v.certSANs(m.CertSANs)
	v.revokedCertificates(m.RevokedCertificates)

	switch {
	case m.IsControlPlane():
		v.issuingCA("machine.ca", m.CA, "the OS (Talos API) CA", "certs.os")
	case m.Type == TypeWorker:
		if m.CA == nil {
			break
		}

		if len(m.CA.Key) > 0 {
			v.fail("machine.ca.key", "the OS CA key is not allowed on worker nodes: remove it (key: \"\"); only control planes issue certificates")
		}

		if len(m.CA.Crt) == 0 {
			if len(m.AcceptedCAs) == 0 {
				v.fail("machine.ca.crt", "trusted CA certificates are required on worker nodes (machine.ca.crt, machine.acceptedCAs): set machine.ca.crt to the OS CA certificate")
			}
		} else {
			v.caCertificate("machine.ca.crt", m.CA.Crt)
		}
	}
}

// certSANs applies the rules trustd signs by (certs.CheckSAN), so that a name trustd would refuse
// is refused here rather than failing every renewal of the node's API certificate.
func (v *validator) certSANs(sans []string) {
	const path = "machine.certSANs"

	if len(sans) > certs.MaxSANs {
		v.fail(path, "has %d entries, at most %d are allowed in a certificate: remove some", len(sans), certs.MaxSANs)
	}

	for i, san := range sans {
		if err := certs.CheckSAN(san); err != nil {
			v.fail(fmt.Sprintf("%s[%d]", path, i), "%q %v", san, err)
		}
	}
}

// revokedCertificates checks the shape of each entry; whether a fingerprint names a known CA is
// not checked here, so an entry outlives the rotation of the CA that issued it.
func (v *validator) revokedCertificates(entries []revocation.Entry) {
	for i, e := range entries {
		err := e.Check()
		if err == nil {
			continue
		}

		for _, one := range unjoin(err) {
			var fe *revocation.FieldError
			if errors.As(one, &fe) {
				v.fail(fmt.Sprintf("machine.revokedCertificates[%d].%s", i, fe.Field), "%v", fe.Err)
			}
		}
	}
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}

	return []error{err}
}

func (v *validator) cluster(c *ClusterSection, controlPlane bool) {
	v.endpoint(c.ControlPlane)

	v.acceptedCAs("cluster.acceptedCAs", c.AcceptedCAs)
	v.acceptedCAs("cluster.acceptedAggregatorCAs", c.AcceptedAggregatorCAs)

	for i, k := range c.AcceptedServiceAccountKeys {
		path := fmt.Sprintf("cluster.acceptedServiceAccountKeys[%d].key", i)
		if k == nil || len(k.Key) == 0 {
			v.fail(path, "is empty: set it to a PEM public key or remove the entry")

			continue
		}

		if _, err := certs.ParsePublicKey(k.Key); err != nil {
			v.fail(path, "%v: set it to the base64 of a PEM public (or private) key", err)
		}
	}

	var etcdCA *CertificateAndKey

	if c.Etcd != nil {
		etcdCA = c.Etcd.CA
		v.acceptedCAs("cluster.etcd.acceptedCAs", c.Etcd.AcceptedCAs)
	}

	if controlPlane {
		v.issuingCA("cluster.ca", c.CA, "the Kubernetes CA", "certs.k8s")
		v.issuingCA("cluster.aggregatorCA", c.AggregatorCA, "the aggregator (front-proxy) CA", "certs.k8saggregator")
		v.issuingCA("cluster.etcd.ca", etcdCA, "the etcd CA", "certs.etcd")
		v.serviceAccount(c.ServiceAccount)

		return
	}

	v.workerRoot("cluster.ca", c.CA, "Kubernetes")
	v.workerRoot("cluster.aggregatorCA", c.AggregatorCA, "aggregator")
	v.workerRoot("cluster.etcd.ca", etcdCA, "etcd")

	if c.ServiceAccount != nil && len(c.ServiceAccount.Key) > 0 {
		v.fail("cluster.serviceAccount.key", "the service-account signing key is not allowed on worker nodes: remove cluster.serviceAccount")
	}
}

func (v *validator) endpoint(cp *ControlPlane) {
	const path = "cluster.controlPlane.endpoint"

	if cp == nil || cp.Endpoint == "" {
		v.fail(path, "is missing: set it to the Kubernetes API URL, e.g. https://cp.example.com:6443")

		return
	}

	u, err := url.Parse(cp.Endpoint)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		v.fail(path, "%q is not an https URL: set it to the Kubernetes API URL, e.g. https://cp.example.com:6443", cp.Endpoint)
	}
}

// issuingCA checks a CA a control plane issues with: present, a CA certificate, its matching key.
func (v *validator) issuingCA(path string, ca *CertificateAndKey, what, bundleField string) {
	if ca == nil || len(ca.Crt) == 0 {
		v.fail(path+".crt", "%s certificate is required on control-plane nodes: set it from %s.crt of secrets.yaml", what, bundleField)

		return
	}

	crt, ok := v.caCertificate(path+".crt", ca.Crt)

	if len(ca.Key) == 0 {
		v.fail(path+".key", "%s key is required on control-plane nodes: set it from %s.key of secrets.yaml", what, bundleField)

		return
	}

	key, err := certs.ParsePrivateKey(ca.Key)
	if err != nil {
		v.fail(path+".key", "%v: set it to the base64 of the PEM private key of %s.crt", err, path)

		return
	}

	if ok && !certs.KeyMatchesCertificate(crt, key) {
		v.fail(path+".key", "does not match the certificate in %s.crt: set the key that was generated with that certificate", path)
	}
}

// workerRoot checks a root on a worker: the certificate (if any) is a CA, and there is no key.
func (v *validator) workerRoot(path string, ca *CertificateAndKey, what string) {
	if ca == nil {
		return
	}

	if len(ca.Key) > 0 {
		v.fail(path+".key", "the %s CA key is not allowed on worker nodes: remove it (key: \"\"); only control planes hold CA keys", what)
	}

	if len(ca.Crt) > 0 {
		v.caCertificate(path+".crt", ca.Crt)
	}
}

func (v *validator) serviceAccount(sa *Key) {
	const path = "cluster.serviceAccount.key"

	if sa == nil || len(sa.Key) == 0 {
		v.fail(path, "the service-account signing key is required on control-plane nodes: set it from certs.k8sserviceaccount.key of secrets.yaml")

		return
	}

	if _, err := certs.ParsePrivateKey(sa.Key); err != nil {
		v.fail(path, "%v: set it to the base64 of a PEM private key (ECDSA or RSA)", err)
	}
}

func (v *validator) acceptedCAs(path string, list []*Certificate) {
	for i, entry := range list {
		entryPath := fmt.Sprintf("%s[%d].crt", path, i)
		if entry == nil || len(entry.Crt) == 0 {
			v.fail(entryPath, "is empty: set it to the base64 of a PEM CA certificate or remove the entry")

			continue
		}

		if _, err := certs.ParseCertificates(entry.Crt); err != nil {
			v.fail(entryPath, "%v: set it to the base64 of a PEM CA certificate", err)
		}
	}
}

// caCertificate checks that data is a PEM CA certificate and returns it.
func (v *validator) caCertificate(path string, data []byte) (*x509.Certificate, bool) {
	crt, err := certs.ParseCertificate(data)
	if err != nil {
		v.fail(path, "%v: set it to the base64 of the PEM CA certificate", err)

		return nil, false
	}

	if !crt.IsCA {
		v.fail(path, "the certificate (subject %q) is not a CA (basic constraints CA:FALSE): use the CA certificate, not a leaf", crt.Subject.String())

		return crt, false
	}

	return crt, true
}
