package kubernetes

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
)

// Kubeconfigs of the control-plane components under <state-dir>/secrets/kubernetes, with
// kubeadm's names.
const (
	// ControllerManagerKubeconfigFile is kube-controller-manager's --kubeconfig.
	ControllerManagerKubeconfigFile = "controller-manager.conf"
	// SchedulerKubeconfigFile is kube-scheduler's --kubeconfig.
	SchedulerKubeconfigFile = "scheduler.conf"
	// AdminKubeconfigFile is the node's own admin kubeconfig, for tools run on the control plane.
	AdminKubeconfigFile = "admin.conf"
)

// LocalAdminCommonName is the client certificate subject of admin.conf: Talos names its internal
// admin so (reference §5.7), which tells it apart from the `admin` of user kubeconfigs in audit logs.
const LocalAdminCommonName = "talos:admin"

// ComponentKubeconfigs are the specs of the control-plane kubeconfigs, by file name: all point at
// server (the node's own kube-apiserver) and trust caBundle (the accepted Kubernetes CAs).
// kube-controller-manager and kube-scheduler are named as Kubernetes' RBAC bootstrap policy knows
// them (CN and O system:kube-controller-manager, system:kube-scheduler); admin.conf is in
// system:masters.
func ComponentKubeconfigs(clusterName, server string, caBundle []byte, lifetime time.Duration) map[string]kubeconfig.Spec {
	controllerManager := kubeconfig.ControllerManager(clusterName, server, caBundle)
	controllerManager.Organization = []string{kubeconfig.ControllerManagerUser}
	controllerManager.Lifetime = lifetime

	scheduler := kubeconfig.Scheduler(clusterName, server, caBundle)
	scheduler.Organization = []string{kubeconfig.SchedulerUser}
	scheduler.Lifetime = lifetime

	admin := kubeconfig.Admin(clusterName, server, caBundle, lifetime)
	admin.CommonName = LocalAdminCommonName

	return map[string]kubeconfig.Spec{
		ControllerManagerKubeconfigFile: controllerManager,
		SchedulerKubeconfigFile:         scheduler,
		AdminKubeconfigFile:             admin,
	}
}

// KubeconfigRenewal reads an existing kubeconfig and returns its client certificate with the time
// it is due for renewal: half its life from its issuance, as Talos renews them. It refuses (and the caller issues a
// new one) a kubeconfig that no longer fits spec: another server, cluster or CA data, or a client
// certificate of another subject or not signed by issuer.
func KubeconfigRenewal(data []byte, spec kubeconfig.Spec, issuer *x509.Certificate) (*x509.Certificate, time.Time, error) {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("not a kubeconfig: %w", err)
	}

	context, ok := cfg.Contexts[cfg.CurrentContext]
	if !ok {
		return nil, time.Time{}, errors.New("no current context")
	}

	cluster, user := cfg.Clusters[context.Cluster], cfg.AuthInfos[context.AuthInfo]
	if cluster == nil || user == nil {
		return nil, time.Time{}, errors.New("the current context has no cluster or user")
	}

	switch {
	case context.Cluster != spec.ClusterName || context.AuthInfo != spec.ContextName():
		return nil, time.Time{}, fmt.Errorf("names %s/%s, want %s/%s", context.Cluster, context.AuthInfo, spec.ClusterName, spec.ContextName())
	case cluster.Server != spec.Server:
		return nil, time.Time{}, fmt.Errorf("server %s, want %s", cluster.Server, spec.Server)
	case !bytes.Equal(cluster.CertificateAuthorityData, spec.CABundle):
		return nil, time.Time{}, errors.New("the CA data is not the accepted Kubernetes CA bundle")
	}

	crt, err := certs.ParseCertificate(user.ClientCertificateData)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("client certificate: %w", err)
	}

	key, err := certs.ParsePrivateKey(user.ClientKeyData)
	if err != nil || !certs.KeyMatchesCertificate(crt, key) {
		return nil, time.Time{}, errors.New("the client key does not match the certificate")
	}

	switch {
	case crt.Subject.CommonName != spec.CommonName || !slices.Equal(crt.Subject.Organization, spec.Organization):
		return nil, time.Time{}, fmt.Errorf("client certificate subject %s, want CN %s O %v", crt.Subject, spec.CommonName, spec.Organization)
	case crt.CheckSignatureFrom(issuer) != nil:
		return nil, time.Time{}, errors.New("the client certificate is not signed by the issuing Kubernetes CA")
	}

	// NotBefore is backdated by certs.Backdate: the life counted is from the issuance.
	issued := crt.NotBefore.Add(certs.Backdate)

	return crt, issued.Add(crt.NotAfter.Sub(issued) / 2), nil
}
