package pki_test

import (
	"net/netip"
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlnetwork "github.com/nodepki/nodepki/controllers/network"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

func TestCertSANs(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)

	kubernetesDNS := []string{
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", testHostname,
	}

	for _, tc := range []struct {
		name string
		doc  func() *machineconfig.Document
		want map[resource.ID]pki.CertSANSpec
	}{
		{
			name: "control plane",
			doc: func() *machineconfig.Document {
				doc := ctest.ControlPlane(s)
				doc.Machine.CertSANs = []string{"lb.example.test.", "192.0.2.10", testHostname, "10.5.0.2"}

				return doc
			},
			want: map[resource.ID]pki.CertSANSpec{
				pki.SANsAPI: {
					IPs:      addrs("10.5.0.2", "192.0.2.10", "2001:db8::2"),
					DNSNames: []string{"lb.example.test", testHostname},
				},
				pki.SANsKubernetes: {
					IPs:      addrs("10.5.0.2", "10.96.0.1", "127.0.0.1", "::1", "2001:db8::2"),
					DNSNames: append([]string{"cluster.example.test"}, kubernetesDNS...),
				},
				pki.SANsEtcd: {
					IPs:      addrs("10.5.0.2", "127.0.0.1", "::1", "2001:db8::2"),
					DNSNames: []string{"localhost", testHostname},
				},
			},
		},
		{
			name: "control plane with an IP endpoint",
			doc: func() *machineconfig.Document {
				doc := ctest.ControlPlane(s)
				doc.Cluster.ControlPlane.Endpoint = "https://[2001:db8::100]:6443"

				return doc
			},
			want: map[resource.ID]pki.CertSANSpec{
				pki.SANsAPI: {IPs: addrs("10.5.0.2", "2001:db8::2"), DNSNames: []string{testHostname}},
				pki.SANsKubernetes: {
					IPs:      addrs("10.5.0.2", "10.96.0.1", "127.0.0.1", "::1", "2001:db8::2", "2001:db8::100"),
					DNSNames: kubernetesDNS,
				},
				pki.SANsEtcd: {
					IPs:      addrs("10.5.0.2", "127.0.0.1", "::1", "2001:db8::2"),
					DNSNames: []string{"localhost", testHostname},
				},
			},
		},
		{
			name: "control plane with the cluster's DNS domain, service subnets and API server SANs",
			doc: func() *machineconfig.Document {
				doc := ctest.ControlPlane(s)
				doc.Cluster.Network = &machineconfig.ClusterNetwork{
					DNSDomain:      "corp.example.",
					ServiceSubnets: []string{"10.100.0.0/16", "fd00:10:96::/112"},
				}
				doc.Cluster.APIServer = &machineconfig.APIServer{CertSANs: []string{"*.lb.example.test", "192.0.2.20"}}

				return doc
			},
			want: map[resource.ID]pki.CertSANSpec{
				pki.SANsAPI: {IPs: addrs("10.5.0.2", "2001:db8::2"), DNSNames: []string{testHostname}},
				pki.SANsKubernetes: {
					IPs: addrs("10.5.0.2", "10.100.0.1", "127.0.0.1", "192.0.2.20", "::1", "2001:db8::2", "fd00:10:96::1"),
					DNSNames: []string{
						"*.lb.example.test", "cluster.example.test", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
						"kubernetes.default.svc.corp.example", "localhost", testHostname,
					},
				},
				pki.SANsEtcd: {
					IPs:      addrs("10.5.0.2", "127.0.0.1", "::1", "2001:db8::2"),
					DNSNames: []string{"localhost", testHostname},
				},
			},
		},
		{
			name: "worker has the api SANs only",
			doc: func() *machineconfig.Document {
				doc := ctest.Worker(s)
				doc.Machine.CertSANs = []string{"worker.example.test"}

				return doc
			},
			want: map[resource.ID]pki.CertSANSpec{
				pki.SANsAPI: {IPs: addrs("10.5.0.2", "2001:db8::2"), DNSNames: []string{testHostname, "worker.example.test"}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			env := ctest.Run(t,
				&ctrlnetwork.NodeAddressesController{Addresses: testAddresses},
				ctrlpki.NewCertSANsController(testHostname),
			)
			env.SetMachineConfig(t, tc.doc())

			assertCertSANs(t, env, tc.want)
		})
	}
}

func assertCertSANs(t *testing.T, env *ctest.Env, want map[resource.ID]pki.CertSANSpec) {
	t.Helper()

	for id, spec := range want {
		rtestutils.AssertResource(env.Ctx, t, env.State, id, func(res *pki.CertSAN, a *assert.Assertions) {
			a.Equal(spec, *res.TypedSpec())
		})
	}

	for _, id := range []resource.ID{pki.SANsAPI, pki.SANsKubernetes, pki.SANsEtcd} {
		if _, ok := want[id]; !ok {
			rtestutils.AssertNoResource[*pki.CertSAN](env.Ctx, t, env.State, id)
		}
	}
}

func TestCertSANsFollowInputs(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := ctest.Run(t,
		&ctrlnetwork.NodeAddressesController{Addresses: []netip.Addr{netip.MustParseAddr("10.5.0.2")}},
		ctrlpki.NewCertSANsController(testHostname),
	)

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	rtestutils.AssertLength[*pki.CertSAN](env.Ctx, t, env.State, 3)

	before := versions[*pki.CertSAN](t, env)

	doc := ctest.ControlPlane(s)
	doc.Cluster.ClusterName = "renamed"
	doc.Machine.CertSANs = []string{"api.example.test"}
	env.SetMachineConfig(t, doc)

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.SANsAPI, func(res *pki.CertSAN, a *assert.Assertions) {
		a.Equal([]string{"api.example.test", testHostname}, res.TypedSpec().DNSNames)
	})

	after := versions[*pki.CertSAN](t, env)
	delete(before, pki.SANsAPI)
	delete(after, pki.SANsAPI)
	require.Equal(t, before, after, "SANs were rewritten without a change")

	env.SetMachineConfig(t, ctest.Worker(s))
	assertCertSANs(t, env, map[resource.ID]pki.CertSANSpec{
		pki.SANsAPI: {IPs: addrs("10.5.0.2"), DNSNames: []string{testHostname}},
	})

	env.DeleteMachineConfig(t)
	assertCertSANs(t, env, nil)
}

// TestAPIServerCertificateSANs follows the kube-apiserver certificate through the whole graph: it
// carries the SANs the cluster section defines, and a patch of cluster.apiServer.certSANs (or of the
// network) reissues it, while the runtime keeps running, with the new names.
func TestAPIServerCertificateSANs(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	env := runGraph(t)

	for _, step := range []struct {
		name     string
		patch    func(doc *machineconfig.Document)
		dns, ips []string
		// host is a name a client reaching the API server by it checks against the certificate.
		host string
	}{
		{
			name:  "defaults",
			patch: func(*machineconfig.Document) {},
			dns: []string{
				"cluster.example.test", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.cluster.local", "localhost", testHostname,
			},
			ips:  []string{"10.5.0.2", "10.96.0.1", "127.0.0.1", "::1", "2001:db8::2"},
			host: "cluster.example.test",
		},
		{
			name: "certSANs patched in",
			patch: func(doc *machineconfig.Document) {
				doc.Cluster.APIServer = &machineconfig.APIServer{CertSANs: []string{"api.example.test", "*.lb.example.test", "192.0.2.20"}}
			},
			dns: []string{
				"*.lb.example.test", "api.example.test", "cluster.example.test", "kubernetes", "kubernetes.default",
				"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost", testHostname,
			},
			ips:  []string{"10.5.0.2", "10.96.0.1", "127.0.0.1", "192.0.2.20", "::1", "2001:db8::2"},
			host: "cp-1.lb.example.test",
		},
		{
			name: "network patched",
			patch: func(doc *machineconfig.Document) {
				doc.Cluster.APIServer = &machineconfig.APIServer{CertSANs: []string{"*.lb.example.test"}}
				doc.Cluster.Network = &machineconfig.ClusterNetwork{DNSDomain: "corp.example", ServiceSubnets: []string{"10.100.0.0/16"}}
			},
			dns: []string{
				"*.lb.example.test", "cluster.example.test", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
				"kubernetes.default.svc.corp.example", "localhost", testHostname,
			},
			ips:  []string{"10.5.0.2", "10.100.0.1", "127.0.0.1", "::1", "2001:db8::2"},
			host: "kubernetes.default.svc.corp.example",
		},
	} {
		doc := ctest.ControlPlane(s)
		step.patch(doc)
		env.SetMachineConfig(t, doc)

		rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertKubeAPIServer, func(res *pki.NodeCertificate, a *assert.Assertions) {
			if !a.NotEmpty(res.TypedSpec().Certificate, step.name) {
				return
			}

			crt := parseCertificate(t, res.TypedSpec().Certificate)
			a.Equal(step.dns, crt.DNSNames, step.name)
			a.Equal(step.ips, ipsOf(crt.IPAddresses), step.name)
			a.NoError(crt.VerifyHostname(step.host), step.name)
		})
	}
}
