// Package etcd holds the resources of the "etcd" namespace: what a control plane wrote for its
// etcd member (the PKI files), the state of the member nodepkid supervises, and the request to
// bootstrap the cluster.
package etcd

import "github.com/cosi-project/runtime/pkg/resource"

// NamespaceName is the namespace of etcd resources.
const NamespaceName resource.Namespace = "etcd"

// Singleton IDs.
const (
	// PKIFilesID is the ID of the PKIFiles resource.
	PKIFilesID = resource.ID("etcd")
	// LocalMemberID is the ID of the MemberStatus of the member this node runs.
	LocalMemberID = resource.ID("local")
	// BootstrapID is the ID of the Bootstrap resource.
	BootstrapID = resource.ID("etcd")
)
