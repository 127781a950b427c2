// Package resources lists every nodepki resource type and namespace and registers them in the
// state's meta namespace, which is how `nodepkictl get` and `talosctl get` discover them.
package resources

import (
	"context"
	"fmt"

	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/registry"

	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/etcd"
	"github.com/nodepki/nodepki/resources/kubernetes"
	"github.com/nodepki/nodepki/resources/network"
	"github.com/nodepki/nodepki/resources/pki"
)

// Namespaces maps each nodepki namespace to its description.
func Namespaces() map[string]string {
	return map[string]string{
		config.NamespaceName:     "Machine configuration.",
		config.ViewNamespaceName: "The decoded machine configuration controllers read (in memory, derived from config).",
		network.NamespaceName:    "Node addresses.",
		pki.NamespaceName:        "Roots, trust pools, leaf certificates and their status.",
		cluster.NamespaceName:    "Nodes of the cluster known to this control plane.",
		etcd.NamespaceName:       "The etcd member of a control plane: its PKI files and its status.",
		kubernetes.NamespaceName: "The Kubernetes control plane of a control plane: the files of its kube-apiserver, its status, the component kubeconfigs.",
	}
}

// Definitions lists one empty resource of every type.
func Definitions() []meta.ResourceWithRD {
	return []meta.ResourceWithRD{
		&config.MachineConfig{},
		&config.MachineConfigView{},
		&network.NodeAddresses{},
		&pki.RootSecret{},
		&pki.AcceptedCA{},
		&pki.CertSAN{},
		&pki.CertificateRequest{},
		&pki.NodeCertificate{},
		&pki.CertificateStatus{},
		&pki.CAStatus{},
		&pki.SecurityStatus{},
		&pki.Revocations{},
		&cluster.Member{},
		&etcd.PKIFiles{},
		&etcd.MemberStatus{},
		&etcd.Bootstrap{},
		&kubernetes.APIServerFiles{},
		&kubernetes.APIServerStatus{},
		&kubernetes.KubeconfigFiles{},
	}
}

// Register creates the meta namespace records and resource definitions in st.
func Register(ctx context.Context, st state.State) error {
	namespaces := registry.NewNamespaceRegistry(st)
	if err := namespaces.RegisterDefault(ctx); err != nil {
		return fmt.Errorf("error registering default namespaces: %w", err)
	}

	for ns, description := range Namespaces() {
		if err := namespaces.Register(ctx, ns, description); err != nil {
			return fmt.Errorf("error registering namespace %q: %w", ns, err)
		}
	}

	definitions := registry.NewResourceRegistry(st)
	if err := definitions.RegisterDefault(ctx); err != nil {
		return fmt.Errorf("error registering default resource definitions: %w", err)
	}

	for _, r := range Definitions() {
		if err := definitions.Register(ctx, r); err != nil {
			return fmt.Errorf("error registering resource definition %s: %w", r.ResourceDefinition().Type, err)
		}
	}

	return nil
}
