// Package kubernetes_test runs a real kube-apiserver on the files a real nodepkid control plane
// writes, against a real etcd, and uses it with the kubeconfigs nodepki issues.
package kubernetes_test

import (
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/test/testbin"
)

// The binaries under test: nodepkid and nodepkictl built by TestMain; kube-apiserver, kubectl and
// etcd from the repository's bin/ (`make tools-kubernetes`, and `make tools` for etcd).
var (
	nodepkid, nodepkictl         string
	kubeAPIServer, kubectl, etcd string
	// missing is why the tests cannot run; they skip locally and fail in CI.
	missing string
)

func TestMain(m *testing.M) {
	testbin.Main(m, "kubernetes", func(b testbin.Binaries) error {
		nodepkid, nodepkictl = b.Nodepkid, b.Nodepkictl
		kubeAPIServer, kubectl, etcd, missing = findTools()

		return nil
	})
}

// findTools locates the third-party binaries in the repository's bin/; NODEPKI_KUBERNETES_BIN and
// NODEPKI_ETCD_BIN override the directory of each.
func findTools() (apiserver, ctl, etcdBinary, why string) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", "", fmt.Sprintf("cannot locate the repository: %v", err)
	}

	bin := filepath.Join(filepath.Dir(strings.TrimSpace(string(out))), "bin")
	kubeDir, etcdDir := bin, bin

	if d := os.Getenv("NODEPKI_KUBERNETES_BIN"); d != "" {
		kubeDir = d
	}

	if d := os.Getenv("NODEPKI_ETCD_BIN"); d != "" {
		etcdDir = d
	}

	apiserver, ctl, etcdBinary = filepath.Join(kubeDir, "kube-apiserver"), filepath.Join(kubeDir, "kubectl"), filepath.Join(etcdDir, "etcd")

	for _, tool := range []struct{ path, make string }{{apiserver, "tools-kubernetes"}, {ctl, "tools-kubernetes"}, {etcdBinary, "tools"}} {
		if _, err := os.Stat(tool.path); err != nil {
			return "", "", "", fmt.Sprintf("%s is missing: run `make %s`", tool.path, tool.make)
		}
	}

	return apiserver, ctl, etcdBinary, ""
}

// requireTools skips the test when a binary is missing, and fails it in CI.
func requireTools(t testing.TB) {
	t.Helper()

	if missing == "" {
		return
	}

	if os.Getenv("CI") == "true" {
		t.Fatalf("kubernetes tests need the Kubernetes and etcd binaries: %s", missing)
	}

	t.Skipf("kubernetes tests need the Kubernetes and etcd binaries: %s", missing)
}

// issueClient issues a client pair of ca for cn in groups, valid for an hour.
func issueClient(t *testing.T, ca *certs.CA, cn string, groups ...string) (crt, key []byte) {
	t.Helper()

	crt, key, err := ca.Issue(certs.Profile{
		CommonName: cn, Organization: groups, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, Lifetime: time.Hour,
	}, time.Now())
	require.NoError(t, err)

	return crt, key
}
