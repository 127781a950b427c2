// Package kubernetes holds the resources of the "kubernetes" namespace: what a control plane
// wrote for its Kubernetes control-plane components.
package kubernetes

import "github.com/cosi-project/runtime/pkg/resource"

// NamespaceName is the namespace of Kubernetes resources.
const NamespaceName resource.Namespace = "kubernetes"

// APIServerFilesID is the ID of the APIServerFiles resource.
const APIServerFilesID = resource.ID("kube-apiserver")
