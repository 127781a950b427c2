// Package kubernetes holds the resources of the "kubernetes" namespace: what a control plane
// wrote for its Kubernetes control-plane components, and the state of the kube-apiserver it runs.
package kubernetes

import "github.com/cosi-project/runtime/pkg/resource"

// NamespaceName is the namespace of Kubernetes resources.
const NamespaceName resource.Namespace = "kubernetes"

// Singleton IDs.
const (
	// APIServerFilesID is the ID of the APIServerFiles resource.
	APIServerFilesID = resource.ID("kube-apiserver")
	// APIServerStatusID is the ID of the APIServerStatus of the kube-apiserver this node runs.
	APIServerStatusID = resource.ID("kube-apiserver")
	// KubeconfigFilesID is the ID of the KubeconfigFiles resource.
	KubeconfigFilesID = resource.ID("control-plane")
)
