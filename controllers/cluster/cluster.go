// Package cluster holds the controllers that produce the resources of the "cluster" namespace:
// what a control plane knows of the nodes of its cluster. Workers are recorded by trustd when it
// signs their node API certificate (runtime/trustd); control planes record themselves here.
package cluster
