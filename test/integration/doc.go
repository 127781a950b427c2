// Package integration holds end-to-end tests and benchmarks that run the built nodepkid and
// nodepkictl binaries as real processes: local clusters on 127.0.0.0/8 addresses (each test on
// its own range, so they run in parallel), driven the way an operator drives them.
package integration
