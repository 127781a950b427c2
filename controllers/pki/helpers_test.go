package pki_test

import (
	stdx509 "crypto/x509"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlnetwork "github.com/nodepki/nodepki/controllers/network"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

const testHostname = "node-1"

var testAddresses = []netip.Addr{netip.MustParseAddr("10.5.0.2"), netip.MustParseAddr("2001:db8::2")}

// runGraph runs the whole resource graph of one node; a worker's trustd requests are tried for
// trustdRetryWindow.
func runGraph(t *testing.T, extra ...ctest.Named) *ctest.Env {
	t.Helper()

	return ctest.Run(t, append([]ctest.Named{
		&ctrlnetwork.NodeAddressesController{Addresses: testAddresses},
		ctrlpki.NewRootSecretsController(),
		ctrlpki.NewAcceptedCAsController(),
		ctrlpki.NewCertSANsController(testHostname),
		ctrlpki.NewCertificateRequestsController(ctrlpki.CertificateRequestsOptions{Hostname: testHostname}),
		ctrlpki.NewNodeCertificatesController(ctrlpki.NodeCertificatesOptions{
			Trustd: ctrlpki.TrustdOptions{RetryUnit: 10 * time.Millisecond, RetryWindow: trustdRetryWindow},
		}),
		ctrlpki.NewCertificateStatusesController(nil),
	}, extra...)...)
}

const trustdRetryWindow = 100 * time.Millisecond

func addrs(ips ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.MustParseAddr(ip))
	}

	return out
}

func parseCertificate(t testing.TB, pem string) *stdx509.Certificate {
	t.Helper()

	crt, err := certs.ParseCertificate([]byte(pem))
	require.NoError(t, err)

	return crt
}

// versions returns the version of every resource of a type.
func versions[R interface {
	resource.Resource
	ResourceDefinition() meta.ResourceDefinitionSpec
}](t *testing.T, env *ctest.Env) map[resource.ID]string {
	t.Helper()

	list, err := safe.StateListAll[R](env.Ctx, env.State)
	require.NoError(t, err)

	out := map[resource.ID]string{}
	for res := range list.All() {
		out[res.Metadata().ID()] = res.Metadata().Version().String()
	}

	return out
}

// leafRow is a row of the leaf certificate table of docs/resources.md, which the tests take as the
// specification of every leaf.
type leafRow struct {
	id, root     resource.ID
	commonName   string
	organization []string
	// sans is "CertSANs/<id>", "node IPs, hostname" or "none".
	sans        string
	keyUsage    stdx509.KeyUsage
	extKeyUsage []stdx509.ExtKeyUsage
	lifetime    time.Duration
	workers     bool
}

// documentedLeaves parses the leaf table of docs/resources.md.
func documentedLeaves(t testing.TB) []leafRow {
	t.Helper()

	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "resources.md"))
	require.NoError(t, err)

	_, table, ok := strings.Cut(string(doc), "| ID | root | subject | SANs | key usage | extended key usage | lifetime | where |")
	require.True(t, ok, "no leaf table in docs/resources.md")

	var rows []leafRow

	for line := range strings.Lines(table) {
		if !strings.HasPrefix(line, "| `") {
			if len(rows) > 0 {
				break
			}

			continue
		}

		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		require.Len(t, cells, 8, "row %q", line)

		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}

		row := leafRow{id: strings.Trim(cells[0], "`"), root: cells[1], sans: cells[3], workers: strings.HasPrefix(cells[7], "all")}

		for part := range strings.SplitSeq(cells[2], ", ") {
			key, value, _ := strings.Cut(part, "=")

			switch key {
			case "CN":
				row.commonName = strings.ReplaceAll(value, "hostname", testHostname)
			case "O":
				row.organization = append(row.organization, value)
			default:
				t.Fatalf("row %s: unknown subject part %q", row.id, part)
			}
		}

		for usage := range strings.SplitSeq(cells[4], ", ") {
			row.keyUsage |= map[string]stdx509.KeyUsage{
				"digitalSignature": stdx509.KeyUsageDigitalSignature, "keyEncipherment": stdx509.KeyUsageKeyEncipherment,
			}[usage]
		}

		for usage := range strings.SplitSeq(cells[5], ", ") {
			row.extKeyUsage = append(row.extKeyUsage, map[string]stdx509.ExtKeyUsage{
				"serverAuth": stdx509.ExtKeyUsageServerAuth, "clientAuth": stdx509.ExtKeyUsageClientAuth,
			}[usage])
		}

		family, _, _ := strings.Cut(cells[6], " ")
		row.lifetime = map[string]time.Duration{
			"api": machineconfig.DefaultAPILifetime, "etcd": machineconfig.DefaultEtcdLifetime, "kubernetes": machineconfig.DefaultKubernetesLifetime,
		}[family]
		require.NotZero(t, row.lifetime, "row %s: unknown lifetime %q", row.id, cells[6])

		rows = append(rows, row)
	}

	return rows
}

// leafIDs are the leaves a control plane holds (every documented leaf).
func leafIDs(t testing.TB) []resource.ID {
	t.Helper()

	var out []resource.ID
	for _, row := range documentedLeaves(t) {
		out = append(out, row.id)
	}

	return out
}

// leafIDsOf are the leaves of a root.
func leafIDsOf(t testing.TB, root resource.ID) []resource.ID {
	t.Helper()

	var out []resource.ID

	for _, row := range documentedLeaves(t) {
		if row.root == root {
			out = append(out, row.id)
		}
	}

	return out
}
