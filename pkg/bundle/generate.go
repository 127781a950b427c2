package bundle

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// Sizes of the random cluster secrets, as Talos generates them.
const (
	clusterIDSize        = 32
	clusterSecretSize    = 32
	encryptionSecretSize = 32
)

// Generate creates a bundle with every root, token and secret freshly generated, as
// `talosctl gen secrets` does for the current Talos version (except that the service-account
// key is ECDSA P-256, which Kubernetes verifies much faster than RSA-4096).
func Generate() (*Bundle, error) {
	b := &Bundle{}
	if err := b.fillMissing(); err != nil {
		return nil, err
	}

	return b, nil
}

// FromKubernetesPKI creates a bundle that keeps the Kubernetes roots of an existing kubeadm
// cluster: ca.crt/ca.key (kubernetes), etcd/ca.crt and etcd/ca.key (etcd),
// front-proxy-ca.crt/front-proxy-ca.key (aggregator) and sa.key (service account) from dir.
// An empty bootstrapToken is generated; everything else (OS CA, trustd token, cluster
// identity, encryption secret) is generated too.
func FromKubernetesPKI(dir, bootstrapToken string) (*Bundle, error) {
	info, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("kubernetes PKI directory: %w", err)
	}

	if !info.IsDir() {
		return nil, fmt.Errorf("kubernetes PKI directory %q is not a directory", dir)
	}

	if bootstrapToken != "" && !machineconfig.ValidToken(bootstrapToken) {
		return nil, fmt.Errorf("kubernetes bootstrap token: %s", machineconfig.TokenFormatHint)
	}

	b := &Bundle{
		Secrets: &Secrets{BootstrapToken: bootstrapToken},
		Certs:   &Certs{},
	}

	if b.Certs.K8s, err = loadKubeadmCA(dir, "ca.crt", "ca.key"); err != nil {
		return nil, err
	}

	if b.Certs.Etcd, err = loadKubeadmCA(dir, filepath.Join("etcd", "ca.crt"), filepath.Join("etcd", "ca.key")); err != nil {
		return nil, err
	}

	if b.Certs.K8sAggregator, err = loadKubeadmCA(dir, "front-proxy-ca.crt", "front-proxy-ca.key"); err != nil {
		return nil, err
	}

	if b.Certs.K8sServiceAccount, err = loadServiceAccountKey(filepath.Join(dir, "sa.key")); err != nil {
		return nil, err
	}

	if err = b.fillMissing(); err != nil {
		return nil, err
	}

	if err = b.Validate(); err != nil {
		return nil, fmt.Errorf("bundle built from %q: %w", dir, err)
	}

	return b, nil
}

func loadKubeadmCA(dir, crtName, keyName string) (*machineconfig.CertificateAndKey, error) {
	crtPath, keyPath := filepath.Join(dir, crtName), filepath.Join(dir, keyName)

	crtPEM, err := os.ReadFile(crtPath)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}

	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("reading CA key: %w", err)
	}

	crt, err := certs.ParseCertificate(crtPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", crtPath, err)
	}

	if msg := caProblem(crt, time.Now()); msg != "" {
		return nil, fmt.Errorf("%s: %s", crtPath, msg)
	}

	key, err := certs.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}

	if !certs.KeyMatchesCertificate(crt, key) {
		return nil, fmt.Errorf("%s: key does not match the certificate %s", keyPath, crtPath)
	}

	return &machineconfig.CertificateAndKey{Crt: crtPEM, Key: keyPEM}, nil
}

func loadServiceAccountKey(path string) (*machineconfig.Key, error) {
	keyPEM, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading service-account key: %w", err)
	}

	if msg := serviceAccountKeyProblem(keyPEM); msg != "" {
		return nil, fmt.Errorf("%s: %s", path, msg)
	}

	return &machineconfig.Key{Key: keyPEM}, nil
}

// fillMissing generates every part of the bundle that is not set yet.
func (b *Bundle) fillMissing() error {
	if b.Certs == nil {
		b.Certs = &Certs{}
	}

	for _, root := range []struct {
		name string
		slot **machineconfig.CertificateAndKey
	}{
		{certs.RootEtcd, &b.Certs.Etcd},
		{certs.RootKubernetes, &b.Certs.K8s},
		{certs.RootAggregator, &b.Certs.K8sAggregator},
		{certs.RootOS, &b.Certs.OS},
	} {
		if *root.slot != nil {
			continue
		}

		crt, key, err := certs.NewRootCA(root.name)
		if err != nil {
			return err
		}

		*root.slot = &machineconfig.CertificateAndKey{Crt: crt, Key: key}
	}

	if b.Certs.K8sServiceAccount == nil {
		key, err := certs.NewServiceAccountKey()
		if err != nil {
			return err
		}

		b.Certs.K8sServiceAccount = &machineconfig.Key{Key: key}
	}

	if b.Secrets == nil {
		b.Secrets = &Secrets{}
	}

	if err := fillToken(&b.Secrets.BootstrapToken, "bootstrap token"); err != nil {
		return err
	}

	if b.Secrets.SecretboxEncryptionSecret == "" && b.Secrets.AESCBCEncryptionSecret == "" {
		secret, err := randomBase64(encryptionSecretSize, base64.StdEncoding)
		if err != nil {
			return fmt.Errorf("error generating encryption secret: %w", err)
		}

		b.Secrets.SecretboxEncryptionSecret = secret
	}

	if b.TrustdInfo == nil {
		b.TrustdInfo = &TrustdInfo{}
	}

	if err := fillToken(&b.TrustdInfo.Token, "trustd token"); err != nil {
		return err
	}

	if b.Cluster == nil {
		b.Cluster = &Cluster{}
	}

	if b.Cluster.ID == "" {
		id, err := randomBase64(clusterIDSize, base64.URLEncoding)
		if err != nil {
			return fmt.Errorf("error generating cluster id: %w", err)
		}

		b.Cluster.ID = id
	}

	if b.Cluster.Secret == "" {
		secret, err := randomBase64(clusterSecretSize, base64.StdEncoding)
		if err != nil {
			return fmt.Errorf("error generating cluster secret: %w", err)
		}

		b.Cluster.Secret = secret
	}

	return nil
}

func fillToken(token *string, what string) error {
	if *token != "" {
		return nil
	}

	generated, err := machineconfig.NewToken(rand.Reader)
	if err != nil {
		return fmt.Errorf("error generating %s: %w", what, err)
	}

	*token = generated

	return nil
}

func randomBase64(size int, enc *base64.Encoding) (string, error) {
	buf := make([]byte, size)
	if _, err := io.ReadFull(rand.Reader, buf); err != nil {
		return "", err
	}

	return enc.EncodeToString(buf), nil
}

// serviceAccountKeyProblem says what is wrong with a service-account signing key, or "".
func serviceAccountKeyProblem(keyPEM []byte) string {
	key, err := certs.ParsePrivateKey(keyPEM)
	if err != nil {
		return err.Error()
	}

	switch key.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
		return ""
	case ed25519.PrivateKey:
		return "Ed25519 keys cannot sign Kubernetes service-account tokens: use an ECDSA or RSA key"
	default:
		return fmt.Sprintf("unsupported key type %T: use an ECDSA or RSA key", key)
	}
}
