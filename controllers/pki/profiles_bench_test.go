package pki

import (
	stdx509 "crypto/x509"
	"net/netip"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// BenchmarkIssueLeaves is the pure cryptographic cost of what runtime.BenchmarkConfigUpdateReissue
// does for one config change: issue every certificate of a control plane through the same
// requests, then x509-verify each against its root's trust pool for its usages, one after the
// other on one goroutine. As in that benchmark, each pool holds the issuing CA and another CA of
// the same kind (a rotation step). The ratio of the two is the cost of the controllers and the state.
func BenchmarkIssueLeaves(b *testing.B) {
	doc := ctest.ControlPlane(ctest.NewSecrets(b))
	doc.Machine.AcceptedCAs = []*machineconfig.Certificate{ctest.NewCA(b, certs.RootOS).Accepted()}
	doc.Cluster.AcceptedCAs = []*machineconfig.Certificate{ctest.NewCA(b, certs.RootKubernetes).Accepted()}
	doc.Cluster.Etcd.AcceptedCAs = []*machineconfig.Certificate{ctest.NewCA(b, certs.RootEtcd).Accepted()}
	doc.Cluster.AcceptedAggregatorCAs = []*machineconfig.Certificate{ctest.NewCA(b, certs.RootAggregator).Accepted()}
	addresses := []netip.Addr{netip.MustParseAddr("10.5.0.2"), netip.MustParseAddr("2001:db8::2")}

	pools, err := acceptedCAs(doc, &poolParser{})
	require.NoError(b, err)

	sans, err := certSANs(doc, addresses, "node-1")
	require.NoError(b, err)

	requests, ready, err := certificateRequests(doc, nodeIdentity{hostname: "node-1", addresses: addresses, sans: sans}, nil)
	require.NoError(b, err)
	require.True(b, ready)
	// Every leaf of a control plane, as runtime.BenchmarkConfigUpdateReissue waits for.
	require.Len(b, requests, 10)

	cas := map[resource.ID]*certs.CA{}
	roots := map[resource.ID]*stdx509.CertPool{}

	for id, root := range rootSecrets(doc) {
		if id == pki.RootServiceAccount {
			continue
		}

		ca, err := certs.LoadCA([]byte(root.IssuingCert), []byte(root.IssuingKey))
		require.NoError(b, err)

		cas[id] = ca
		roots[id] = stdx509.NewCertPool()

		for _, crtPEM := range pools[id].Certificates {
			crt, err := certs.ParseCertificate([]byte(crtPEM))
			require.NoError(b, err)

			roots[id].AddCert(crt)
		}
	}

	now := time.Now()

	b.ReportAllocs()

	reportCPU := ctest.CPUPerOp(b)

	for b.Loop() {
		for _, request := range requests {
			profile, err := profileOf(&request)
			if err != nil {
				b.Fatal(err)
			}

			issued, err := cas[request.Root].IssueParsed(profile, now)
			if err != nil {
				b.Fatal(err)
			}

			if _, err = issued.Crt.Verify(stdx509.VerifyOptions{Roots: roots[request.Root], CurrentTime: now, KeyUsages: issued.Crt.ExtKeyUsage}); err != nil {
				b.Fatal(err)
			}
		}
	}

	reportCPU()
	b.ReportMetric(float64(len(requests)), "certs/op")
}
