package kubernetes

import (
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nodepki/nodepki/pkg/certs"
)

// Files of kube-apiserver under <state-dir>/secrets/kubernetes, with kubeadm's names.
const (
	// ClientCAFile is the accepted Kubernetes CA bundle (--client-ca-file).
	ClientCAFile = "ca.crt"
	// ServingCertFile and ServingKeyFile are the serving pair (--tls-cert-file, --tls-private-key-file).
	ServingCertFile = "apiserver.crt"
	ServingKeyFile  = "apiserver.key"
	// KubeletClientCertFile and KubeletClientKeyFile are the client pair kube-apiserver presents to
	// kubelets (--kubelet-client-certificate, --kubelet-client-key).
	KubeletClientCertFile = "apiserver-kubelet-client.crt"
	KubeletClientKeyFile  = "apiserver-kubelet-client.key"
	// RequestHeaderCAFile is the accepted aggregator CA bundle (--requestheader-client-ca-file).
	RequestHeaderCAFile = "front-proxy-ca.crt"
	// ProxyClientCertFile and ProxyClientKeyFile are the front-proxy client pair
	// (--proxy-client-cert-file, --proxy-client-key-file).
	ProxyClientCertFile = "front-proxy-client.crt"
	ProxyClientKeyFile  = "front-proxy-client.key"
	// ServiceAccountKeyFile is the service-account signing key (--service-account-signing-key-file).
	ServiceAccountKeyFile = "sa.key"
	// ServiceAccountPublicKeysFile holds every accepted service-account public key
	// (--service-account-key-file).
	ServiceAccountPublicKeysFile = "sa.pub"
	// EtcdCAFile is the accepted etcd CA bundle (--etcd-cafile).
	EtcdCAFile = "etcd-ca.crt"
	// EtcdClientCertFile and EtcdClientKeyFile are the etcd client pair (--etcd-certfile, --etcd-keyfile).
	EtcdClientCertFile = "apiserver-etcd-client.crt"
	EtcdClientKeyFile  = "apiserver-etcd-client.key"
)

// KeyPair is a PEM certificate and its PEM private key.
type KeyPair struct {
	Certificate string
	Key         string
}

// APIServerPKI is everything kube-apiserver's certificate and key flags read.
type APIServerPKI struct {
	// ClientCAs are the accepted Kubernetes CAs (PEM each).
	ClientCAs     []string
	Serving       KeyPair
	KubeletClient KeyPair
	// AggregatorCAs are the accepted aggregator (front-proxy) CAs.
	AggregatorCAs []string
	ProxyClient   KeyPair
	// ServiceAccountKey is the PEM signing key; ServiceAccountPublicKeys every accepted public
	// key, the signing key's included.
	ServiceAccountKey        string
	ServiceAccountPublicKeys []string
	// EtcdCAs are the accepted etcd CAs; EtcdClient is the etcd client pair.
	EtcdCAs    []string
	EtcdClient KeyPair
}

// Files returns the contents of every file, by file name, after checking that they are
// consistent: each pair's key is its certificate's, the serving certificate is issued by a
// client CA (clients verify it with the same bundle they get in their kubeconfig), the proxy
// client certificate by an aggregator CA (or kube-apiserver would refuse its own requestheader
// requests), and the signing key's public key is among the accepted ones (or the tokens it signs
// would not verify). Every problem is reported.
func (p APIServerPKI) Files() (map[string][]byte, error) {
	var errs []error

	files := map[string][]byte{}

	bundle := func(name, what string, pems []string) []*x509.Certificate {
		var parsed []*x509.Certificate

		for i, text := range pems {
			crts, err := certs.ParseCertificates([]byte(text))
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %s %d: %w", name, what, i, err))

				continue
			}

			parsed = append(parsed, crts...)
		}

		if len(pems) == 0 {
			errs = append(errs, fmt.Errorf("%s: no %s", name, what))
		}

		files[name] = PEMBundle(pems)

		return parsed
	}

	pair := func(crtName, keyName, what string, kp KeyPair, issuers []*x509.Certificate, issuersName string) {
		crt, err := checkPair(kp)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", crtName, what, err))

			return
		}

		if issuers != nil && !slices.ContainsFunc(issuers, func(ca *x509.Certificate) bool { return crt.CheckSignatureFrom(ca) == nil }) {
			errs = append(errs, fmt.Errorf("%s (%s): issued by %q, which is not in %s", crtName, what, crt.Issuer.String(), issuersName))
		}

		files[crtName], files[keyName] = []byte(kp.Certificate), []byte(kp.Key)
	}

	clientCAs := bundle(ClientCAFile, "Kubernetes CA", p.ClientCAs)
	aggregatorCAs := bundle(RequestHeaderCAFile, "aggregator CA", p.AggregatorCAs)
	bundle(EtcdCAFile, "etcd CA", p.EtcdCAs)

	pair(ServingCertFile, ServingKeyFile, "serving", p.Serving, clientCAs, ClientCAFile)
	pair(KubeletClientCertFile, KubeletClientKeyFile, "kubelet client", p.KubeletClient, clientCAs, ClientCAFile)
	pair(ProxyClientCertFile, ProxyClientKeyFile, "front-proxy client", p.ProxyClient, aggregatorCAs, RequestHeaderCAFile)
	pair(EtcdClientCertFile, EtcdClientKeyFile, "etcd client", p.EtcdClient, nil, "")

	if err := checkServiceAccount(p.ServiceAccountKey, p.ServiceAccountPublicKeys); err != nil {
		errs = append(errs, err)
	}

	files[ServiceAccountKeyFile] = []byte(p.ServiceAccountKey)
	files[ServiceAccountPublicKeysFile] = PEMBundle(p.ServiceAccountPublicKeys)

	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	return files, nil
}

func checkPair(kp KeyPair) (*x509.Certificate, error) {
	if kp.Certificate == "" || kp.Key == "" {
		return nil, errors.New("not issued yet")
	}

	crt, err := certs.ParseCertificate([]byte(kp.Certificate))
	if err != nil {
		return nil, err
	}

	key, err := certs.ParsePrivateKey([]byte(kp.Key))
	if err != nil {
		return nil, err
	}

	if !certs.KeyMatchesCertificate(crt, key) {
		return nil, errors.New("the key does not match the certificate")
	}

	return crt, nil
}

func checkServiceAccount(signingKey string, publicKeys []string) error {
	if signingKey == "" {
		return fmt.Errorf("%s: no service-account signing key", ServiceAccountKeyFile)
	}

	key, err := certs.ParsePrivateKey([]byte(signingKey))
	if err != nil {
		return fmt.Errorf("%s: %w", ServiceAccountKeyFile, err)
	}

	want, err := certs.PublicKeyFingerprint(key.Public())
	if err != nil {
		return fmt.Errorf("%s: %w", ServiceAccountKeyFile, err)
	}

	found := false

	for i, text := range publicKeys {
		pub, err := certs.ParsePublicKey([]byte(text))
		if err != nil {
			return fmt.Errorf("%s: key %d: %w", ServiceAccountPublicKeysFile, i, err)
		}

		if fp, err := certs.PublicKeyFingerprint(pub); err == nil && fp == want {
			found = true
		}
	}

	if !found {
		return fmt.Errorf("%s: the signing key's public key is not among the accepted service-account keys", ServiceAccountPublicKeysFile)
	}

	return nil
}

// PEMBundle concatenates PEM texts, each ending in exactly one newline: a CA bundle file or CA data.
func PEMBundle(pems []string) []byte {
	var b strings.Builder

	for _, text := range pems {
		b.WriteString(strings.TrimSpace(text))
		b.WriteString("\n")
	}

	return []byte(b.String())
}

// APIServerFlags are kube-apiserver's certificate and key flags for the files in dir.
func APIServerFlags(dir string) []string {
	path := func(name string) string { return filepath.Join(dir, name) }

	return []string{
		"--client-ca-file=" + path(ClientCAFile),
		"--tls-cert-file=" + path(ServingCertFile),
		"--tls-private-key-file=" + path(ServingKeyFile),
		"--kubelet-client-certificate=" + path(KubeletClientCertFile),
		"--kubelet-client-key=" + path(KubeletClientKeyFile),
		"--requestheader-client-ca-file=" + path(RequestHeaderCAFile),
		"--proxy-client-cert-file=" + path(ProxyClientCertFile),
		"--proxy-client-key-file=" + path(ProxyClientKeyFile),
		"--service-account-signing-key-file=" + path(ServiceAccountKeyFile),
		"--service-account-key-file=" + path(ServiceAccountPublicKeysFile),
		"--etcd-cafile=" + path(EtcdCAFile),
		"--etcd-certfile=" + path(EtcdClientCertFile),
		"--etcd-keyfile=" + path(EtcdClientKeyFile),
	}
}
