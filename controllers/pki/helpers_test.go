package pki_test

import (
	stdx509 "crypto/x509"
	"net/netip"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlnetwork "github.com/nodepki/nodepki/controllers/network"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

const testHostname = "node-1"

var testAddresses = []netip.Addr{netip.MustParseAddr("10.5.0.2"), netip.MustParseAddr("2001:db8::2")}

// runGraph runs the whole resource graph of one node.
func runGraph(t *testing.T, lifetimes map[resource.ID]time.Duration, extra ...controller.Controller) *ctest.Env {
	t.Helper()

	return ctest.Run(t, append([]controller.Controller{
		&ctrlnetwork.NodeAddressesController{Addresses: testAddresses},
		&ctrlpki.RootSecretsController{},
		&ctrlpki.AcceptedCAsController{},
		&ctrlpki.CertSANsController{Hostname: testHostname},
		&ctrlpki.NodeCertificatesController{Hostname: testHostname, Lifetimes: lifetimes},
		&ctrlpki.CertificateStatusesController{},
	}, extra...)...)
}

// controlPlaneCertificates are the certificates a control plane issues itself.
var controlPlaneCertificates = []resource.ID{
	pki.CertAPI, pki.CertAPIClient, pki.CertTrustd,
	pki.CertEtcdServer, pki.CertEtcdPeer, pki.CertEtcdClient, pki.CertEtcdAdmin,
	pki.CertKubeAPIServer, pki.CertKubeAPIServerKubeletClient, pki.CertFrontProxyClient,
}

// certificatesOf lists the control plane certificates issued by a root.
func certificatesOf(root resource.ID) []resource.ID {
	switch root {
	case pki.RootOS:
		return []resource.ID{pki.CertAPI, pki.CertAPIClient, pki.CertTrustd}
	case pki.RootEtcd:
		return []resource.ID{pki.CertEtcdServer, pki.CertEtcdPeer, pki.CertEtcdClient, pki.CertEtcdAdmin}
	case pki.RootKubernetes:
		return []resource.ID{pki.CertKubeAPIServer, pki.CertKubeAPIServerKubeletClient}
	case pki.RootAggregator:
		return []resource.ID{pki.CertFrontProxyClient}
	}

	return nil
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
