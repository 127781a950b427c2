// Package config holds the resources of the "config" namespace: the machine config a node runs with.
//
// The namespace is persisted (bolt, under the node's state directory), so a config applied through
// the API survives a restart.
package config

import "github.com/cosi-project/runtime/pkg/resource"

// NamespaceName is the namespace of machine configuration resources.
const NamespaceName resource.Namespace = "config"
