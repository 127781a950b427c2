package pki_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/tls"
	stdx509 "crypto/x509"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/network"
	"github.com/nodepki/nodepki/resources/pki"
)

const year = 365 * 24 * time.Hour

func TestNodeCertificatesControlPlaneProfiles(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := runGraph(t, nil)

	doc := ctest.ControlPlane(s)
	doc.Machine.CertSANs = []string{"api.example.test", "192.0.2.10"}
	env.SetMachineConfig(t, doc)

	cas := map[resource.ID]ctest.CA{pki.RootOS: s.OS, pki.RootKubernetes: s.Kubernetes, pki.RootEtcd: s.Etcd, pki.RootAggregator: s.Aggregator}
	ds, ke := stdx509.KeyUsageDigitalSignature, stdx509.KeyUsageKeyEncipherment
	server, client := stdx509.ExtKeyUsageServerAuth, stdx509.ExtKeyUsageClientAuth
	nodeIPs := []string{"10.5.0.2", "2001:db8::2"}

	for _, tc := range []struct {
		id       resource.ID
		root     resource.ID
		cn       string
		org      []string
		dns      []string
		ips      []string
		ku       stdx509.KeyUsage
		eku      []stdx509.ExtKeyUsage
		lifetime time.Duration
	}{
		{pki.CertAPI, pki.RootOS, testHostname, nil, []string{"api.example.test", testHostname}, []string{"10.5.0.2", "192.0.2.10", "2001:db8::2"}, ds, []stdx509.ExtKeyUsage{server}, 24 * time.Hour},
		{pki.CertAPIClient, pki.RootOS, testHostname, []string{"os:impersonator"}, nil, nil, ds, []stdx509.ExtKeyUsage{client}, 24 * time.Hour},
		{pki.CertTrustd, pki.RootOS, testHostname, nil, []string{"api.example.test", testHostname}, []string{"10.5.0.2", "192.0.2.10", "2001:db8::2"}, ds | ke, []stdx509.ExtKeyUsage{server}, 24 * time.Hour},
		{pki.CertEtcdServer, pki.RootEtcd, testHostname, nil, []string{"localhost", testHostname}, []string{"10.5.0.2", "127.0.0.1", "::1", "2001:db8::2"}, ds | ke, []stdx509.ExtKeyUsage{server, client}, year},
		{pki.CertEtcdPeer, pki.RootEtcd, testHostname, nil, []string{testHostname}, nodeIPs, ds | ke, []stdx509.ExtKeyUsage{server, client}, year},
		{pki.CertEtcdClient, pki.RootEtcd, "kube-apiserver", nil, nil, nil, ds | ke, []stdx509.ExtKeyUsage{client}, year},
		{pki.CertEtcdAdmin, pki.RootEtcd, "nodepki", nil, nil, nil, ds | ke, []stdx509.ExtKeyUsage{client}, year},
		{
			pki.CertKubeAPIServer, pki.RootKubernetes, "kube-apiserver", []string{"kube-master"},
			[]string{"cluster.example.test", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", testHostname},
			[]string{"10.5.0.2", "10.96.0.1", "127.0.0.1", "2001:db8::2"}, ds | ke, []stdx509.ExtKeyUsage{server}, year,
		},
		{pki.CertKubeAPIServerKubeletClient, pki.RootKubernetes, "apiserver-kubelet-client", []string{"system:masters"}, nil, nil, ds | ke, []stdx509.ExtKeyUsage{client}, year},
		{pki.CertFrontProxyClient, pki.RootAggregator, "front-proxy-client", nil, nil, nil, ds | ke, []stdx509.ExtKeyUsage{client}, year},
	} {
		t.Run(tc.id, func(t *testing.T) {
			ca := cas[tc.root]
			caCrt := parseCertificate(t, string(ca.Crt))

			rtestutils.AssertResource(env.Ctx, t, env.State, tc.id, func(res *pki.NodeCertificate, a *assert.Assertions) {
				spec := res.TypedSpec()
				if !a.NotEmpty(spec.Certificate) {
					return
				}

				crt := parseCertificate(t, spec.Certificate)

				a.Equal(tc.root, spec.Root)
				a.Equal(tc.cn, crt.Subject.CommonName)
				a.Equal(tc.org, crt.Subject.Organization)
				a.Equal(tc.dns, crt.DNSNames)
				a.Equal(tc.ips, ipsOf(crt.IPAddresses))
				a.Equal(tc.ku, crt.KeyUsage)
				a.Equal(tc.eku, crt.ExtKeyUsage)
				a.False(crt.IsCA)

				issued := crt.NotBefore.Add(certs.Backdate)
				a.Equal(tc.lifetime, crt.NotAfter.Sub(issued).Round(time.Second))
				a.WithinDuration(time.Now(), issued, time.Minute)

				// Signed by the root's CA, with a key of the CA's family that matches the certificate.
				a.NoError(crt.CheckSignatureFrom(caCrt))
				a.Equal(ca.Fingerprint(t), spec.IssuerFingerprint)

				pair, err := tls.X509KeyPair([]byte(spec.Certificate), []byte(spec.Key))
				a.NoError(err)

				if tc.root == pki.RootOS {
					a.IsType(ed25519.PrivateKey{}, pair.PrivateKey)
				} else {
					a.IsType(&ecdsa.PrivateKey{}, pair.PrivateKey)
				}

				a.Equal(string(ca.Crt), spec.CABundle)
				a.Len(spec.Request, 64)
				a.Empty(spec.LastError)

				// Renewal at 2/3 of the life, at most 5% earlier (RenewAt has a resolution of one second).
				renewAt, err := time.Parse(time.RFC3339, spec.RenewAt)
				a.NoError(err)
				a.False(renewAt.After(issued.Add(tc.lifetime*2/3)), "renewAt %s too late", renewAt)
				a.False(renewAt.Before(issued.Add(tc.lifetime*2/3-tc.lifetime/20-time.Second)), "renewAt %s too early", renewAt)
			})
		})
	}

	rtestutils.AssertLength[*pki.NodeCertificate](env.Ctx, t, env.State, len(controlPlaneCertificates))
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
	env := runGraph(t, nil)

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	assertAllIssued(t, env, controlPlaneCertificates)

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

	for _, id := range controlPlaneCertificates {
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

	etcd := certificatesOf(pki.RootEtcd)
	rtestutils.AssertResources(env.Ctx, t, env.State, etcd, func(res *pki.NodeCertificate, a *assert.Assertions) {
		a.Equal(string(other.Crt)+string(s.Etcd.Crt), res.TypedSpec().CABundle)
	})

	final := certificateSerials(t, env)
	finalVersions := versions[*pki.NodeCertificate](t, env)

	for _, id := range controlPlaneCertificates {
		require.Equal(t, after[id], final[id], "%s was reissued for a bundle change", id)

		if !slices.Contains(etcd, id) {
			require.Equal(t, afterVersions[id], finalVersions[id], "%s was rewritten", id)
		}
	}
}

func TestNodeCertificatesWorker(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := runGraph(t, nil)

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	assertAllIssued(t, env, controlPlaneCertificates)

	// A worker issues nothing itself: everything this controller issued goes away.
	env.SetMachineConfig(t, ctest.Worker(s))

	for _, id := range controlPlaneCertificates {
		rtestutils.AssertNoResource[*pki.NodeCertificate](env.Ctx, t, env.State, id)
		rtestutils.AssertNoResource[*pki.CertificateStatus](env.Ctx, t, env.State, id)
	}

	// On a worker, api comes from another controller (trustd); it is reported but never touched.
	const trustdOwner = "pki.TrustdAPIController"

	api := pki.NewNodeCertificate(pki.CertAPI)
	api.TypedSpec().Root = pki.RootOS
	api.TypedSpec().LastError = "trustd unreachable"
	require.NoError(t, env.State.Create(env.Ctx, api, state.WithCreateOwner(trustdOwner)))

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StatePending, res.TypedSpec().State)
		a.Equal("trustd unreachable", res.TypedSpec().LastError)
	})

	osCA, err := certs.LoadCA(s.OS.Crt, s.OS.Key)
	require.NoError(t, err)

	crt, key, err := osCA.Issue(certs.Profile{CommonName: testHostname, Lifetime: time.Hour, ExtKeyUsage: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}}, time.Now())
	require.NoError(t, err)

	_, err = safe.StateUpdateWithConflicts(env.Ctx, env.State, api.Metadata(), func(res *pki.NodeCertificate) error {
		res.TypedSpec().Certificate, res.TypedSpec().Key, res.TypedSpec().LastError = string(crt), string(key), ""

		return nil
	}, state.WithUpdateOwner(trustdOwner))
	require.NoError(t, err)

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateValid, res.TypedSpec().State)
		a.True(res.TypedSpec().Trusted)
		a.Equal(s.OS.Fingerprint(t), res.TypedSpec().IssuerFingerprint)
	})

	apiVersion := versions[*pki.NodeCertificate](t, env)[pki.CertAPI]

	doc := ctest.Worker(s)
	doc.Machine.CertSANs = []string{"worker.example.test"}
	env.SetMachineConfig(t, doc)

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.SANsAPI, func(res *pki.CertSAN, a *assert.Assertions) {
		a.Contains(res.TypedSpec().DNSNames, "worker.example.test")
	})
	// The controller saw the change (it reads CertSANs); give it a moment to (wrongly) act on api.
	time.Sleep(100 * time.Millisecond)

	require.Equal(t, apiVersion, versions[*pki.NodeCertificate](t, env)[pki.CertAPI], "another controller's api certificate was touched")
}

func TestNodeCertificatesIssuanceError(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := runGraph(t, nil)

	// The etcd CA key belongs to another CA: etcd certificates cannot be issued, the others are.
	doc := ctest.ControlPlane(s)
	doc.Cluster.Etcd.CA = &machineconfig.CertificateAndKey{Crt: s.Etcd.Crt, Key: ctest.NewCA(t, certs.RootEtcd).Key}
	env.SetMachineConfig(t, doc)

	etcd := certificatesOf(pki.RootEtcd)
	others := slices.DeleteFunc(slices.Clone(controlPlaneCertificates), func(id resource.ID) bool { return slices.Contains(etcd, id) })

	assertAllIssued(t, env, others)
	rtestutils.AssertResources(env.Ctx, t, env.State, etcd, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StatePending, res.TypedSpec().State)
		a.Contains(res.TypedSpec().LastError, "key does not match the certificate")
		a.NotContains(res.TypedSpec().LastError, "PRIVATE KEY")
	})

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	assertAllIssued(t, env, controlPlaneCertificates)
	rtestutils.AssertResources(env.Ctx, t, env.State, etcd, func(res *pki.NodeCertificate, a *assert.Assertions) {
		a.Empty(res.TypedSpec().LastError)
	})
}

func TestNodeCertificatesRenewal(t *testing.T) {
	t.Parallel()

	const lifetime = 3 * time.Second

	s := ctest.NewSecrets(t)
	env := runGraph(t, map[resource.ID]time.Duration{pki.CertAPI: lifetime})

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	assertAllIssued(t, env, controlPlaneCertificates)

	first, err := safe.StateGetByID[*pki.NodeCertificate](env.Ctx, env.State, pki.CertAPI)
	require.NoError(t, err)

	firstCrt := parseCertificate(t, first.TypedSpec().Certificate)
	firstRenewAt, err := time.Parse(time.RFC3339, first.TypedSpec().RenewAt)
	require.NoError(t, err)

	others := versions[*pki.NodeCertificate](t, env)

	// Nothing but the timer changes: the certificate is renewed, not before its RenewAt, and its
	// status goes from valid (first certificate) to valid (renewed certificate).
	var renewed *stdx509.Certificate

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateValid, res.TypedSpec().State)
		a.True(res.TypedSpec().Trusted)
		a.NotEqual(firstCrt.SerialNumber.Text(16), res.TypedSpec().Serial)
	})

	current, err := safe.StateGetByID[*pki.NodeCertificate](env.Ctx, env.State, pki.CertAPI)
	require.NoError(t, err)

	renewed = parseCertificate(t, current.TypedSpec().Certificate)
	require.False(t, renewed.NotBefore.Add(certs.Backdate).Before(firstRenewAt.Truncate(time.Second)),
		"renewed at %s, before RenewAt %s", renewed.NotBefore.Add(certs.Backdate), firstRenewAt)
	require.Equal(t, lifetime, renewed.NotAfter.Sub(renewed.NotBefore.Add(certs.Backdate)))

	// Certificates that are not due were left alone.
	now := versions[*pki.NodeCertificate](t, env)
	for _, id := range controlPlaneCertificates {
		if id != pki.CertAPI {
			require.Equal(t, others[id], now[id], "%s was rewritten", id)
		}
	}

	// And it keeps being renewed.
	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.NotEqual(renewed.SerialNumber.Text(16), res.TypedSpec().Serial)
		a.NotEqual(firstCrt.SerialNumber.Text(16), res.TypedSpec().Serial)
		a.Equal(pki.StateValid, res.TypedSpec().State)
	})
}

// TestNodeCertificatesWaitForTheTrustPool feeds the controller a root whose trust pool does not
// have its issuing CA yet: nothing is published until the pool has it, since a certificate is only
// published with a bundle that trusts its issuer.
func TestNodeCertificatesWaitForTheTrustPool(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	other := ctest.NewCA(t, certs.RootOS)
	env := ctest.Run(t, &ctrlpki.NodeCertificatesController{Hostname: testHostname})

	pool := func(cas ...ctest.CA) pki.AcceptedCASpec {
		var spec pki.AcceptedCASpec

		for _, ca := range cas {
			spec.Certificates = append(spec.Certificates, string(ca.Crt))
			spec.Fingerprints = append(spec.Fingerprints, ca.Fingerprint(t))
		}

		spec.IssuingFingerprint = spec.Fingerprints[len(spec.Fingerprints)-1]

		return spec
	}

	for _, res := range []resource.Resource{
		pki.NewRootSecret(pki.RootOS), pki.NewCertSAN(pki.SANsAPI), network.NewNodeAddresses(network.CurrentID), pki.NewAcceptedCA(pki.RootOS),
	} {
		switch r := res.(type) {
		case *pki.RootSecret:
			*r.TypedSpec() = pki.RootSecretSpec{IssuingCert: string(s.OS.Crt), IssuingKey: string(s.OS.Key)}
		case *pki.CertSAN:
			*r.TypedSpec() = pki.CertSANSpec{DNSNames: []string{testHostname}, IPs: []string{"10.5.0.2"}}
		case *network.NodeAddresses:
			*r.TypedSpec() = network.NodeAddressesSpec{Addresses: []string{"10.5.0.2"}}
		case *pki.AcceptedCA:
			// The pool of the previous issuer: the os root has switched, its pool has not yet.
			*r.TypedSpec() = pool(other)
		}

		require.NoError(t, env.State.Create(env.Ctx, res))
	}

	// Long enough to issue; the certificates must not be published meanwhile.
	time.Sleep(200 * time.Millisecond)

	published, err := safe.StateListAll[*pki.NodeCertificate](env.Ctx, env.State)
	require.NoError(t, err)
	require.Zero(t, published.Len(), "certificates published before the trust pool has their issuer")

	require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewAcceptedCA(pki.RootOS), func(res *pki.AcceptedCA) error {
		*res.TypedSpec() = pool(other, s.OS)

		return nil
	}))

	rtestutils.AssertResources(env.Ctx, t, env.State, certificatesOf(pki.RootOS), func(res *pki.NodeCertificate, a *assert.Assertions) {
		spec := res.TypedSpec()
		a.Empty(spec.LastError)
		a.Equal(s.OS.Fingerprint(t), spec.IssuerFingerprint)
		a.Equal(string(other.Crt)+string(s.OS.Crt), spec.CABundle)

		roots := stdx509.NewCertPool()
		a.True(roots.AppendCertsFromPEM([]byte(spec.CABundle)))

		_, err := parseCertificate(t, spec.Certificate).Verify(stdx509.VerifyOptions{Roots: roots, KeyUsages: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageAny}})
		a.NoError(err)
	})
}
