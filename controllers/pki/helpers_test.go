package pki_test

import (
	stdx509 "crypto/x509"
	"net/netip"
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
)

const testHostname = "node-1"

var testAddresses = []netip.Addr{netip.MustParseAddr("10.5.0.2"), netip.MustParseAddr("2001:db8::2")}

// runGraph runs the whole resource graph of one node; a worker's trustd requests are tried for
// trustdRetryWindow.
func runGraph(t *testing.T) *ctest.Env {
	t.Helper()

	return ctest.Run(t,
		&ctrlnetwork.NodeAddressesController{Addresses: testAddresses},
		ctrlpki.NewRootSecretsController(),
		ctrlpki.NewAcceptedCAsController(),
		ctrlpki.NewCertSANsController(testHostname),
		ctrlpki.NewCertificateRequestsController(ctrlpki.CertificateRequestsOptions{Hostname: testHostname}),
		ctrlpki.NewNodeCertificatesController(ctrlpki.NodeCertificatesOptions{
			Trustd: ctrlpki.TrustdOptions{RetryUnit: 10 * time.Millisecond, RetryWindow: trustdRetryWindow},
		}),
		ctrlpki.NewCertificateStatusesController(nil),
	)
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
