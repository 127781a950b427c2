// Package kubernetes owns the consumer side of the Kubernetes PKI on a control plane: the
// controller that writes kube-apiserver's certificate, key and CA files under
// <state-dir>/secrets/kubernetes and, when nodepkid is given a kube-apiserver binary, the
// controller that runs kube-apiserver on them (restarts with backoff, rolling restarts when files
// it reads only at start change).
package kubernetes
