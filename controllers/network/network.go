// Package network holds the controllers that produce the resources of the "network" namespace:
// what the node knows of its own addresses.
package network
