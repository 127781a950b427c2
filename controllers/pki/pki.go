// Package pki holds the controllers that derive the resources of the "pki" namespace from the
// machine config: roots, trust pools, certificate SANs, the node's leaf certificates and their status.
package pki
