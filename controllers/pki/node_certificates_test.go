package pki_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/tls"
	stdx509 "crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// TestNodeCertificatesProfiles issues every leaf on a control plane and checks each against its
// row of the leaf table in docs/resources.md.
func TestNodeCertificatesProfiles(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := runGraph(t)

	doc := ctest.ControlPlane(s)
	doc.Machine.CertSANs = []string{"api.example.test", "192.0.2.10"}
	env.SetMachineConfig(t, doc)

	cas := map[resource.ID]ctest.CA{pki.RootOS: s.OS, pki.RootKubernetes: s.Kubernetes, pki.RootEtcd: s.Etcd, pki.RootAggregator: s.Aggregator}
	rows := documentedLeaves(t)

	require.Len(t, rows, 10, "the leaf table of docs/resources.md")

	for _, row := range rows {
		t.Run(row.id, func(t *testing.T) {
			ca := cas[row.root]
			caCrt := parseCertificate(t, string(ca.Crt))

			// The SANs the row names, as the node has them now.
			sansOf := func(a *assert.Assertions) (dns, ips []string) {
				switch {
				case strings.HasPrefix(row.sans, "CertSANs/"):
					sans, err := safe.StateGetByID[*pki.CertSAN](env.Ctx, env.State, strings.TrimPrefix(row.sans, "CertSANs/"))
					if !a.NoError(err) {
						return nil, nil
					}

					for _, ip := range sans.TypedSpec().IPs {
						ips = append(ips, ip.String())
					}

					return sans.TypedSpec().DNSNames, ips
				case row.sans == "node IPs, hostname":
					return []string{testHostname}, []string{"10.5.0.2", "2001:db8::2"}
				default:
					a.Equal("none", row.sans)

					return nil, nil
				}
			}

			rtestutils.AssertResource(env.Ctx, t, env.State, row.id, func(res *pki.NodeCertificate, a *assert.Assertions) {
				spec := res.TypedSpec()
				if !a.NotEmpty(spec.Certificate) {
					return
				}

				crt := parseCertificate(t, spec.Certificate)
				dns, ips := sansOf(a)

				a.Equal(row.root, spec.Root)
				a.Equal(row.commonName, crt.Subject.CommonName)
				a.Equal(row.organization, crt.Subject.Organization)
				a.Equal(dns, crt.DNSNames)
				a.Equal(ips, ipsOf(crt.IPAddresses))
				a.Equal(row.keyUsage, crt.KeyUsage)
				a.Equal(row.extKeyUsage, crt.ExtKeyUsage)
				a.False(crt.IsCA)

				issued := crt.NotBefore.Add(certs.Backdate)
				a.Equal(row.lifetime, crt.NotAfter.Sub(issued).Round(time.Second))
				a.WithinDuration(time.Now(), issued, time.Minute)

				// Signed by the root's CA, with a key of the CA's family that matches the certificate.
				a.NoError(crt.CheckSignatureFrom(caCrt))
				a.Equal(ca.Fingerprint(t), spec.IssuerFingerprint)

				pair, err := tls.X509KeyPair([]byte(spec.Certificate), []byte(spec.Key))
				a.NoError(err)

				if row.root == pki.RootOS {
					a.IsType(ed25519.PrivateKey{}, pair.PrivateKey)
				} else {
					a.IsType(&ecdsa.PrivateKey{}, pair.PrivateKey)
				}

				a.Equal(string(ca.Crt), spec.CABundle)
				a.Len(spec.Request, 64)
				a.Empty(spec.LastError)

				rootLabel, _ := res.Metadata().Labels().Get(pki.LabelRoot)
				a.Equal(row.root, rootLabel)

				// Renewal at 2/3 of the life, at most 5% earlier (RenewAt has a resolution of one second).
				renewAt := spec.RenewAt.Time
				a.False(renewAt.After(issued.Add(row.lifetime*2/3)), "renewAt %s too late", renewAt)
				a.False(renewAt.Before(issued.Add(row.lifetime*2/3-row.lifetime/20-time.Second)), "renewAt %s too early", renewAt)
			})

			rtestutils.AssertResource(env.Ctx, t, env.State, row.id, func(res *pki.CertificateRequest, a *assert.Assertions) {
				a.Equal(pki.IssuerLocal, res.TypedSpec().Issuer)
				assertRequestLabels(a, res)
			})
		})
	}

	rtestutils.AssertLength[*pki.NodeCertificate](env.Ctx, t, env.State, len(rows))

	// A worker holds exactly the leaves the table says workers hold, obtained from trustd.
	env.SetMachineConfig(t, ctest.Worker(s))

	for _, row := range rows {
		if !row.workers {
			rtestutils.AssertNoResource[*pki.CertificateRequest](env.Ctx, t, env.State, row.id)

			continue
		}

		rtestutils.AssertResource(env.Ctx, t, env.State, row.id, func(res *pki.CertificateRequest, a *assert.Assertions) {
			a.Equal(pki.IssuerTrustd, res.TypedSpec().Issuer)
			assertRequestLabels(a, res)
		})
	}
}

// assertRequestLabels checks the labels a request is listed by: its root and its issuer.
func assertRequestLabels(a *assert.Assertions, req *pki.CertificateRequest) {
	root, _ := req.Metadata().Labels().Get(pki.LabelRoot)
	issuer, _ := req.Metadata().Labels().Get(pki.LabelIssuer)

	a.Equal(req.TypedSpec().Root, root)
	a.Equal(req.TypedSpec().Issuer, issuer)
}

func ipsOf(ips []net.IP) []string {
	var out []string
	for _, ip := range ips {
		out = append(out, ip.String())
	}

	return out
}

// certificateSerials returns the serial of every issued certificate.
func certificateSerials(t *testing.T, env *ctest.Env) map[resource.ID]string {
	t.Helper()

	list, err := safe.StateListAll[*pki.NodeCertificate](env.Ctx, env.State)
	require.NoError(t, err)

	out := map[resource.ID]string{}
	for res := range list.All() {
		out[res.Metadata().ID()] = parseCertificate(t, res.TypedSpec().Certificate).SerialNumber.String()
	}

	return out
}

func assertAllIssued(t *testing.T, env *ctest.Env, ids []resource.ID) {
	t.Helper()

	rtestutils.AssertResources(env.Ctx, t, env.State, ids, func(res *pki.NodeCertificate, a *assert.Assertions) {
		a.NotEmpty(res.TypedSpec().Certificate)
	})
	rtestutils.AssertResources(env.Ctx, t, env.State, ids, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateValid, res.TypedSpec().State)
	})
}

func TestNodeCertificatesReissueOnlyWhatChanged(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := runGraph(t)

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	assertAllIssued(t, env, leafIDs(t))

	serials := certificateSerials(t, env)
	certVersions := versions[*pki.NodeCertificate](t, env)
	statusVersions := versions[*pki.CertificateStatus](t, env)

	// New SANs for the node API: api and trustd are reissued, nothing else is touched.
	doc := ctest.ControlPlane(s)
	doc.Cluster.ClusterName = "renamed"
	doc.Machine.CertSANs = []string{"api.example.test"}
	env.SetMachineConfig(t, doc)

	for _, id := range []resource.ID{pki.CertAPI, pki.CertTrustd} {
		rtestutils.AssertResource(env.Ctx, t, env.State, id, func(res *pki.NodeCertificate, a *assert.Assertions) {
			a.Contains(parseCertificate(t, res.TypedSpec().Certificate).DNSNames, "api.example.test")
		})
	}

	after := certificateSerials(t, env)
	afterVersions := versions[*pki.NodeCertificate](t, env)
	afterStatusVersions := versions[*pki.CertificateStatus](t, env)

	for _, id := range leafIDs(t) {
		if id == pki.CertAPI || id == pki.CertTrustd {
			require.NotEqual(t, serials[id], after[id], "%s was not reissued", id)

			continue
		}

		require.Equal(t, serials[id], after[id], "%s was reissued", id)
		require.Equal(t, certVersions[id], afterVersions[id], "%s was rewritten", id)
		require.Equal(t, statusVersions[id], afterStatusVersions[id], "status of %s was rewritten", id)
	}

	// A new accepted etcd CA changes the etcd bundles in place.
	other := ctest.NewCA(t, certs.RootEtcd)
	doc.Cluster.Etcd.AcceptedCAs = []*machineconfig.Certificate{other.Accepted()}
	env.SetMachineConfig(t, doc)

	etcd := leafIDsOf(t, pki.RootEtcd)
	rtestutils.AssertResources(env.Ctx, t, env.State, etcd, func(res *pki.NodeCertificate, a *assert.Assertions) {
		a.Equal(string(other.Crt)+string(s.Etcd.Crt), res.TypedSpec().CABundle)
	})

	final := certificateSerials(t, env)
	finalVersions := versions[*pki.NodeCertificate](t, env)

	for _, id := range leafIDs(t) {
		require.Equal(t, after[id], final[id], "%s was reissued for a bundle change", id)

		if !slices.Contains(etcd, id) {
			require.Equal(t, afterVersions[id], finalVersions[id], "%s was rewritten", id)
		}
	}
}

// TestNodeCertificatesWorker: a worker holds only api, obtained from trustd; while trustd cannot
// be reached the certificate is pending with the reason. (The round trip itself is tested in
// runtime, against a real trustd.)
func TestNodeCertificatesWorker(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := runGraph(t)

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	assertAllIssued(t, env, leafIDs(t))

	// Nothing listens there (this test's address range). New SANs make the certificate due.
	doc := ctest.Worker(s)
	doc.Cluster.ControlPlane.Endpoint = "https://127.0.50.1:6443"
	doc.Machine.CertSANs = []string{"worker.example.test"}
	env.SetMachineConfig(t, doc)

	for _, id := range leafIDs(t)[1:] {
		rtestutils.AssertNoResource[*pki.NodeCertificate](env.Ctx, t, env.State, id)
		rtestutils.AssertNoResource[*pki.CertificateStatus](env.Ctx, t, env.State, id)
		rtestutils.AssertNoResource[*pki.CertificateRequest](env.Ctx, t, env.State, id)
	}

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateRequest, a *assert.Assertions) {
		a.Equal(pki.IssuerTrustd, res.TypedSpec().Issuer)
		a.Equal([]string{"127.0.50.1:50001"}, res.TypedSpec().TrustdEndpoints)
	})

	// The control plane's certificate is kept (it is still trusted: same OS CA) until one from
	// trustd replaces it, and the failure is reported.
	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateRenewalFailing, res.TypedSpec().State)
		a.Contains(res.TypedSpec().LastError, `trustd endpoint "127.0.50.1:50001"`)
	})

	// Without a machine config nothing is left: requests, certificates and statuses are torn
	// down in order, each waiting for the finalizer of the controller that reads it.
	env.DeleteMachineConfig(t)
	rtestutils.AssertNoResource[*pki.CertificateRequest](env.Ctx, t, env.State, pki.CertAPI)
	rtestutils.AssertNoResource[*pki.NodeCertificate](env.Ctx, t, env.State, pki.CertAPI)
	rtestutils.AssertNoResource[*pki.CertificateStatus](env.Ctx, t, env.State, pki.CertAPI)
}

func TestNodeCertificatesIssuanceError(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := runGraph(t)

	// The etcd CA key belongs to another CA: etcd certificates cannot be issued, the others are.
	doc := ctest.ControlPlane(s)
	doc.Cluster.Etcd.CA = &machineconfig.CertificateAndKey{Crt: s.Etcd.Crt, Key: ctest.NewCA(t, certs.RootEtcd).Key}
	env.SetMachineConfig(t, doc)

	etcd := leafIDsOf(t, pki.RootEtcd)
	others := slices.DeleteFunc(slices.Clone(leafIDs(t)), func(id resource.ID) bool { return slices.Contains(etcd, id) })

	assertAllIssued(t, env, others)
	rtestutils.AssertResources(env.Ctx, t, env.State, etcd, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StatePending, res.TypedSpec().State)
		a.Contains(res.TypedSpec().LastError, "key does not match the certificate")
		a.NotContains(res.TypedSpec().LastError, "PRIVATE KEY")
	})

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	assertAllIssued(t, env, leafIDs(t))
	rtestutils.AssertResources(env.Ctx, t, env.State, etcd, func(res *pki.NodeCertificate, a *assert.Assertions) {
		a.Empty(res.TypedSpec().LastError)
	})
}

// TestNodeCertificatesRenewal runs in a synctest bubble: renewal follows the (fake) clock, with
// no real seconds-long lifetimes.
func TestNodeCertificatesRenewal(t *testing.T) {
	t.Parallel()

	const lifetime = 12 * time.Second

	// Inside the bubble, so that the CAs are valid at its (fake) time.
	synctest.Test(t, func(t *testing.T) {
		s := ctest.NewSecrets(t)
		env := runGraph(t)

		doc := ctest.ControlPlane(s)
		doc.Machine.CertificateLifetimes = &machineconfig.CertificateLifetimes{API: machineconfig.Duration(lifetime)}
		env.SetMachineConfig(t, doc)
		assertAllIssued(t, env, leafIDs(t))

		first, err := safe.StateGetByID[*pki.NodeCertificate](env.Ctx, env.State, pki.CertAPI)
		require.NoError(t, err)

		firstCrt := parseCertificate(t, first.TypedSpec().Certificate)
		firstRenewAt := first.TypedSpec().RenewAt.Time
		others := versions[*pki.NodeCertificate](t, env)

		// Nothing but time passes: the certificate is renewed, not before its RenewAt, and its
		// status is valid throughout.
		rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
			a.Equal(pki.StateValid, res.TypedSpec().State)
			a.True(res.TypedSpec().Trusted)
			a.NotEqual(firstCrt.SerialNumber.Text(16), res.TypedSpec().Serial)
		})

		current, err := safe.StateGetByID[*pki.NodeCertificate](env.Ctx, env.State, pki.CertAPI)
		require.NoError(t, err)

		renewed := parseCertificate(t, current.TypedSpec().Certificate)
		require.False(t, renewed.NotBefore.Add(certs.Backdate).Before(firstRenewAt),
			"renewed at %s, before RenewAt %s", renewed.NotBefore.Add(certs.Backdate), firstRenewAt)
		require.Equal(t, lifetime, renewed.NotAfter.Sub(renewed.NotBefore.Add(certs.Backdate)))
		require.True(t, time.Now().Before(firstCrt.NotAfter), "renewed only after the first certificate expired")

		// Certificates that are not due were left alone.
		now := versions[*pki.NodeCertificate](t, env)
		for _, id := range leafIDs(t) {
			if !slices.Contains(leafIDsOf(t, pki.RootOS), id) {
				require.Equal(t, others[id], now[id], "%s was rewritten", id)
			}
		}

		// And it keeps being renewed.
		rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
			a.NotEqual(renewed.SerialNumber.Text(16), res.TypedSpec().Serial)
			a.NotEqual(firstCrt.SerialNumber.Text(16), res.TypedSpec().Serial)
			a.Equal(pki.StateValid, res.TypedSpec().State)
		})
	})
}

// TestNodeCertificatesWaitForTheTrustPool feeds the controller a root whose trust pool does not
// have its issuing CA yet: nothing is published until the pool has it, since a certificate is only
// published with a bundle that trusts its issuer.
func TestNodeCertificatesWaitForTheTrustPool(t *testing.T) {
	t.Parallel()

	pool := func(t *testing.T, cas ...ctest.CA) pki.AcceptedCASpec {
		var spec pki.AcceptedCASpec

		for _, ca := range cas {
			spec.Certificates = append(spec.Certificates, string(ca.Crt))
			spec.Fingerprints = append(spec.Fingerprints, ca.Fingerprint(t))
		}

		spec.IssuingFingerprint = spec.Fingerprints[len(spec.Fingerprints)-1]

		return spec
	}

	// Inside the bubble, so that the CAs are valid at its (fake) time.
	synctest.Test(t, func(t *testing.T) {
		s := ctest.NewSecrets(t)
		other := ctest.NewCA(t, certs.RootOS)
		env := ctest.Run(t, ctrlpki.NewNodeCertificatesController(ctrlpki.NodeCertificatesOptions{}))

		root := pki.NewRootSecret(pki.RootOS)
		*root.TypedSpec() = pki.RootSecretSpec{IssuingCert: string(s.OS.Crt), IssuingKey: string(s.OS.Key)}

		// The pool of the previous issuer: the os root has switched, its pool has not yet.
		accepted := pki.NewAcceptedCA(pki.RootOS)
		*accepted.TypedSpec() = pool(t, other)

		request := pki.NewCertificateRequest(pki.CertAPI)
		// Labelled as CertificateRequestsController labels it.
		request.Metadata().Labels().Set(pki.LabelRoot, pki.RootOS)
		request.Metadata().Labels().Set(pki.LabelIssuer, pki.IssuerLocal)
		*request.TypedSpec() = pki.CertificateRequestSpec{
			Root: pki.RootOS, Issuer: pki.IssuerLocal, CommonName: testHostname, DNSNames: []string{testHostname}, IPAddresses: addrs("10.5.0.2"),
			KeyUsage: []string{pki.KeyUsageDigitalSignature}, ExtKeyUsage: []string{pki.ExtKeyUsageServerAuth}, Lifetime: time.Hour,
		}

		for _, res := range []resource.Resource{root, accepted, request} {
			require.NoError(t, env.State.Create(env.Ctx, res))
		}

		// Every goroutine of the bubble is idle: the controller has finished with the request.
		synctest.Wait()

		published, err := safe.StateListAll[*pki.NodeCertificate](env.Ctx, env.State)
		require.NoError(t, err)
		require.Zero(t, published.Len(), "certificates published before the trust pool has their issuer")

		require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewAcceptedCA(pki.RootOS), func(res *pki.AcceptedCA) error {
			*res.TypedSpec() = pool(t, other, s.OS)

			return nil
		}))

		rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.NodeCertificate, a *assert.Assertions) {
			spec := res.TypedSpec()
			a.Empty(spec.LastError)
			a.Equal(s.OS.Fingerprint(t), spec.IssuerFingerprint)
			a.Equal(string(other.Crt)+string(s.OS.Crt), spec.CABundle)

			roots := stdx509.NewCertPool()
			a.True(roots.AppendCertsFromPEM([]byte(spec.CABundle)))

			_, err := parseCertificate(t, spec.Certificate).Verify(stdx509.VerifyOptions{Roots: roots, KeyUsages: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}})
			a.NoError(err)
		})
	})
}
