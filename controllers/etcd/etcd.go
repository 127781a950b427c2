// Package etcd owns the consumer side of the etcd PKI on a control plane: the controller that
// writes etcd's certificate files under <state-dir>/secrets/etcd and, when nodepkid is given an
// etcd binary, the controller that runs the member (bootstrap or join, restarts with backoff,
// rolling restarts on trust changes).
package etcd
