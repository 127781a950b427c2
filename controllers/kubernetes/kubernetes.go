// Package kubernetes owns the consumer side of the Kubernetes PKI on a control plane: the
// controller that writes kube-apiserver's certificate, key and CA files under
// <state-dir>/secrets/kubernetes.
package kubernetes
