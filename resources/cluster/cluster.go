// Package cluster holds the resources of the "cluster" namespace: what a control plane knows of
// the nodes of its cluster.
//
// Control planes record themselves and every worker whose node API certificate their trustd
// signed; `nodepkictl rotate-ca` lists them to find every node without being told. The namespace
// is persisted (bolt, under the node's state directory), so a control plane restart keeps them.
package cluster

import "github.com/cosi-project/runtime/pkg/resource"

// NamespaceName is the namespace of cluster membership resources.
const NamespaceName resource.Namespace = "cluster"
