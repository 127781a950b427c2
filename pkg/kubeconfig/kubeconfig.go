// Package kubeconfig owns the kubeconfig files nodepki issues: client certificates signed by the
// Kubernetes CA for the admin, kube-controller-manager and kube-scheduler, written in kubectl's
// format with client-go's clientcmd, and merging an issued kubeconfig into an existing file the
// way `talosctl kubeconfig` does.
package kubeconfig

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/nodepki/nodepki/pkg/certs"
)

// AdminLifetime is the default lifetime of the admin client certificate, as Talos's
// cluster.adminKubeconfig.certLifetime default.
const AdminLifetime = 365 * 24 * time.Hour

// ComponentLifetime is the lifetime of the control-plane components' client certificates.
const ComponentLifetime = 365 * 24 * time.Hour

// Identities of the clients nodepki builds kubeconfigs for, as Kubernetes' RBAC bootstrap policy
// names them.
const (
	AdminCommonName         = "admin"
	AdminGroup              = "system:masters"
	ControllerManagerUser   = "system:kube-controller-manager"
	SchedulerUser           = "system:kube-scheduler"
	defaultContextNamespace = "default"
)

// Spec describes one kubeconfig: the cluster it points at and the client certificate it carries.
type Spec struct {
	// ClusterName names the cluster entry; the user and context are "<user>@<cluster>".
	ClusterName string
	// Server is the https URL of the API server.
	Server string
	// CABundle is the PEM bundle of CAs the client trusts for the API server: the accepted
	// Kubernetes CAs, so that a kubeconfig keeps working through a CA rotation.
	CABundle []byte
	// User is the user part of the user and context names ("admin" gives admin@<cluster>).
	User string
	// CommonName and Organization are the client certificate's subject: Kubernetes reads the
	// user name from CN and groups from O.
	CommonName   string
	Organization []string
	Lifetime     time.Duration
}

// Admin is the spec of the admin kubeconfig: CN admin, O system:masters, as Talos issues it.
func Admin(clusterName, server string, caBundle []byte, lifetime time.Duration) Spec {
	return Spec{
		ClusterName: clusterName, Server: server, CABundle: caBundle,
		User: AdminCommonName, CommonName: AdminCommonName, Organization: []string{AdminGroup}, Lifetime: lifetime,
	}
}

// ControllerManager is the spec of kube-controller-manager's kubeconfig (server: the local API server).
func ControllerManager(clusterName, server string, caBundle []byte) Spec {
	return Spec{
		ClusterName: clusterName, Server: server, CABundle: caBundle,
		User: ControllerManagerUser, CommonName: ControllerManagerUser, Lifetime: ComponentLifetime,
	}
}

// Scheduler is the spec of kube-scheduler's kubeconfig (server: the local API server).
func Scheduler(clusterName, server string, caBundle []byte) Spec {
	return Spec{
		ClusterName: clusterName, Server: server, CABundle: caBundle,
		User: SchedulerUser, CommonName: SchedulerUser, Lifetime: ComponentLifetime,
	}
}

// ContextName is the name of the user and context entries of a spec, as talosctl names them.
func (s Spec) ContextName() string {
	return s.User + "@" + s.ClusterName
}

func (s Spec) check() error {
	var errs []error

	if s.ClusterName == "" {
		errs = append(errs, errors.New("cluster name is empty: set cluster.clusterName"))
	}

	if u, err := url.Parse(s.Server); err != nil || u.Scheme != "https" || u.Hostname() == "" {
		errs = append(errs, fmt.Errorf("server %q is not an https URL: set cluster.controlPlane.endpoint to the Kubernetes API URL, e.g. https://cp.example.com:6443", s.Server))
	}

	if _, err := certs.ParseCertificates(s.CABundle); err != nil {
		errs = append(errs, fmt.Errorf("CA bundle: %w", err))
	}

	if s.User == "" || s.CommonName == "" {
		errs = append(errs, errors.New("the client has no name"))
	}

	if s.Lifetime <= 0 {
		errs = append(errs, fmt.Errorf("certificate lifetime %s is not positive", s.Lifetime))
	}

	return errors.Join(errs...)
}

// Issue signs a client certificate for the spec with ca (the Kubernetes CA) and returns the
// kubeconfig holding it. The certificate never outlives the CA.
func Issue(ca *certs.CA, s Spec, now time.Time) ([]byte, error) {
	if err := s.check(); err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", s.ContextName(), err)
	}

	profile := certs.Profile{
		CommonName:   s.CommonName,
		Organization: s.Organization,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Lifetime:     min(s.Lifetime, ca.Crt.NotAfter.Sub(now)),
	}

	if profile.Lifetime <= 0 {
		return nil, fmt.Errorf("kubeconfig %s: the Kubernetes CA expired at %s: rotate it (`nodepkictl rotate-ca --kubernetes`)", s.ContextName(), ca.Crt.NotAfter.UTC().Format(time.RFC3339))
	}

	crt, key, err := ca.Issue(profile, now)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", s.ContextName(), err)
	}

	return Encode(s, crt, key)
}

// Encode writes the kubeconfig of a spec with the given client certificate and key.
func Encode(s Spec, crtPEM, keyPEM []byte) ([]byte, error) {
	name := s.ContextName()

	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[s.ClusterName] = &clientcmdapi.Cluster{Server: s.Server, CertificateAuthorityData: s.CABundle}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{ClientCertificateData: crtPEM, ClientKeyData: keyPEM}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: s.ClusterName, AuthInfo: name, Namespace: defaultContextNamespace}
	cfg.CurrentContext = name

	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("error encoding kubeconfig %s: %w", name, err)
	}

	return data, nil
}
