package kubernetes

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nodepki/nodepki/pkg/process"
)

// StartupFiles are the files kube-apiserver v1.34 reads only when it starts: the service-account
// signing key and public keys, and the etcd CA bundle. A change to any of them needs a restart;
// kube-apiserver reloads every other file of APIServerFlags by itself (measured by test/kubernetes,
// see docs/kubernetes.md).
func StartupFiles() []string {
	return []string{ServiceAccountKeyFile, ServiceAccountPublicKeysFile, EtcdCAFile}
}

// StartupDigest is a digest of the StartupFiles among files (contents by file name): two file
// sets with the same digest need no restart between them.
func StartupDigest(files map[string][]byte) string {
	h := sha256.New()

	for _, name := range StartupFiles() {
		fmt.Fprintf(h, "%s %d\n", name, len(files[name]))
		h.Write(files[name])
	}

	return hex.EncodeToString(h.Sum(nil))
}

// Process is how kube-apiserver runs under pkg/process, logging to logFile, recorded in pidFile;
// its serving certificate path, unique to the state directory, identifies it for adoption.
func (c APIServerConfig) Process(binary, logFile, pidFile string) (process.Config, error) {
	args, err := c.Args()
	if err != nil {
		return process.Config{}, err
	}

	return process.Config{
		Name:    "kube-apiserver",
		Binary:  binary,
		Args:    args,
		Marker:  apiServerMarker(c.PKIDir),
		LogFile: logFile,
		PIDFile: pidFile,
	}, nil
}

// AdoptAPIServer takes over the kube-apiserver pidFile names if it still runs on the files of
// pkiDir (process.Adopt); nil when there is none.
func AdoptAPIServer(pkiDir, pidFile string) (*process.Process, error) {
	return process.Adopt(process.Config{Name: "kube-apiserver", Marker: apiServerMarker(pkiDir), PIDFile: pidFile})
}

// apiServerMarker is the argument that tells a kube-apiserver of pkiDir from any other.
func apiServerMarker(pkiDir string) string {
	return "--tls-cert-file=" + filepath.Join(pkiDir, ServingCertFile)
}

// readyzBody bounds what Ready reads of an answer.
const readyzBody = 16 << 10

// Ready asks the kube-apiserver at url (https://host:6443) for /readyz, verifying its serving
// certificate against the CA bundle in caFile (ca.crt). It returns nil when the answer is ok, and
// otherwise an error naming the failed checks kube-apiserver lists.
func Ready(ctx context.Context, url, caFile string, timeout time.Duration) error {
	ca, err := os.ReadFile(caFile)
	if err != nil {
		return fmt.Errorf("error reading the CA bundle to verify kube-apiserver: %w", err)
	}

	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(ca) {
		return fmt.Errorf("%s holds no certificate", caFile)
	}

	transport := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}
	defer transport.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/readyz?verbose", nil)
	if err != nil {
		return err
	}

	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		return fmt.Errorf("/readyz: %w", err)
	}

	defer resp.Body.Close()

	body, err := io.ReadAll(io.LimitReader(resp.Body, readyzBody))
	if err != nil {
		return fmt.Errorf("/readyz: %w", err)
	}

	if resp.StatusCode == http.StatusOK {
		return nil
	}

	return fmt.Errorf("/readyz: %s%s", resp.Status, failedChecks(string(body)))
}

// failedChecks lists the "[-]name failed" lines of a verbose /readyz answer.
func failedChecks(body string) string {
	var failed []string

	for line := range strings.SplitSeq(body, "\n") {
		if name, ok := strings.CutPrefix(line, "[-]"); ok {
			failed = append(failed, strings.TrimSpace(name))
		}
	}

	if len(failed) == 0 {
		return ""
	}

	return ": " + strings.Join(failed, "; ")
}
