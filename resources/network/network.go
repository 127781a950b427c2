// Package network holds the resources of the "network" namespace: what the node knows of its own addresses.
package network

import "github.com/cosi-project/runtime/pkg/resource"

// NamespaceName is the namespace of network resources.
const NamespaceName resource.Namespace = "network"
