// Package etcd holds end-to-end tests and benchmarks of nodepki's etcd consumer: local clusters
// of real nodepkid processes whose control planes run real etcd members (bin/etcd, built by
// `make tools`), on 127.0.70.0-127.0.79.255.
package etcd
