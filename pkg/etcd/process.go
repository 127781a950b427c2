package etcd

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/nodepki/nodepki/pkg/process"
)

// MemberConfig is how one etcd member is run.
type MemberConfig struct {
	// Binary is the etcd executable.
	Binary string
	// DataDir is etcd's --data-dir; it is also how an adopted process is recognised.
	DataDir string
	// PKIDir holds the files named by CAFile, ServerCertFile, ...
	PKIDir string
	// LogFile receives etcd's output (appended): a file rather than a pipe, so that etcd keeps
	// running when its supervisor dies.
	LogFile string
	// PIDFile records the running process for adoption.
	PIDFile string
	// Address is the node address both URLs listen on.
	Address netip.Addr
	// InitialCluster and InitialClusterState are set when the data directory is empty: the
	// member bootstraps a cluster ("new") or joins one ("existing").
	InitialCluster      string
	InitialClusterState string
}

// Args are the etcd arguments: client and peer TLS with certificate authentication, one CA
// file trusted for both.
func (c MemberConfig) Args() []string {
	pki := func(name string) string { return filepath.Join(c.PKIDir, name) }

	args := []string{
		"--name=" + MemberName(c.Address),
		"--data-dir=" + c.DataDir,
		"--listen-client-urls=" + ClientURL(c.Address),
		"--advertise-client-urls=" + ClientURL(c.Address),
		"--listen-peer-urls=" + PeerURL(c.Address),
		"--initial-advertise-peer-urls=" + PeerURL(c.Address),
		"--client-cert-auth",
		"--trusted-ca-file=" + pki(CAFile),
		"--cert-file=" + pki(ServerCertFile),
		"--key-file=" + pki(ServerKeyFile),
		"--peer-client-cert-auth",
		"--peer-trusted-ca-file=" + pki(CAFile),
		"--peer-cert-file=" + pki(PeerCertFile),
		"--peer-key-file=" + pki(PeerKeyFile),
		"--log-level=warn",
	}

	// etcd checks a peer's certificate SANs against the connection's source address. On loopback
	// the kernel sources every connection from 127.0.0.1 whatever address the member listens on,
	// so a local cluster's members would refuse each other; the certificate chain is still verified.
	if c.Address.IsLoopback() {
		args = append(args, "--peer-skip-client-san-verification")
	}

	if c.InitialClusterState != "" {
		args = append(args, "--initial-cluster="+c.InitialCluster, "--initial-cluster-state="+c.InitialClusterState)
	}

	return args
}

// HasData reports whether the member's data directory holds a member (it joined or bootstrapped).
func (c MemberConfig) HasData() bool {
	_, err := os.Stat(filepath.Join(c.DataDir, "member"))

	return err == nil
}

// Process is how the member is run by pkg/process: its data directory identifies it.
func (c MemberConfig) Process() process.Config {
	return process.Config{
		Name:    "etcd",
		Binary:  c.Binary,
		Args:    c.Args(),
		Marker:  "--data-dir=" + c.DataDir,
		LogFile: c.LogFile,
		PIDFile: c.PIDFile,
	}
}

// Start starts etcd (pkg/process.Start), recording the digest of the trust bundle it loads.
func Start(c MemberConfig, trustBundleDigest string) (*process.Process, error) {
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("error creating etcd data directory: %w", err)
	}

	return process.Start(c.Process(), trustBundleDigest)
}

// Adopt takes over the etcd process the pidfile names if it is still running with this data
// directory; it returns nil when there is none (a stale pidfile is removed).
func Adopt(c MemberConfig) (*process.Process, error) {
	return process.Adopt(c.Process())
}
