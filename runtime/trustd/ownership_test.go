package trustd_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/certs"
	trustdclient "github.com/nodepki/nodepki/pkg/trustd"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/network"
	"github.com/nodepki/nodepki/resources/pki"
	"github.com/nodepki/nodepki/runtime/trustd"
)

// Addresses of the ownership tests (this package's range, 127.0.90.x-127.0.99.x).
const (
	cpAddress      = "127.0.90.2"
	workerAddress  = "127.0.90.3"
	otherWorker    = "127.0.90.20"
	cpHostname     = "cp-1"
	endpointHost   = "cp.example.test"
	otherWorkerDNS = "worker-20"
)

// withClusterNames gives the control plane what it knows of the cluster: its own addresses and
// API SANs, a machine config with the control-plane endpoint, and another worker's record.
func withClusterNames(t *testing.T, cp *controlPlane) {
	t.Helper()

	ctx := t.Context()

	addresses := network.NewNodeAddresses(network.CurrentID)
	addresses.TypedSpec().Addresses = []string{cpAddress, "10.5.0.2"}
	require.NoError(t, cp.state.Create(ctx, addresses))

	sans := pki.NewCertSAN(pki.SANsAPI)
	sans.TypedSpec().IPs = []netip.Addr{netip.MustParseAddr(cpAddress), netip.MustParseAddr("10.5.0.2")}
	sans.TypedSpec().DNSNames = []string{cpHostname, "cp-1.example.test"}
	require.NoError(t, cp.state.Create(ctx, sans))

	mc := config.NewMachineConfig(config.ActiveID)
	mc.TypedSpec().Raw = []byte("version: v1alpha1\nmachine:\n    type: controlplane\ncluster:\n    controlPlane:\n        endpoint: https://" + endpointHost + ":6443\n")
	require.NoError(t, cp.state.Create(ctx, mc))

	self := cluster.NewMember(cpAddress)
	*self.TypedSpec() = cluster.MemberSpec{Addresses: []string{cpAddress, "10.5.0.2"}, Hostname: cpHostname, MachineType: "controlplane", LastSeen: time.Now().UTC().Format(time.RFC3339)}
	require.NoError(t, cp.state.Create(ctx, self, state.WithCreateOwner("cluster.SelfMemberController")))

	other := cluster.NewMember(otherWorker)
	*other.TypedSpec() = cluster.MemberSpec{Addresses: []string{otherWorker, "10.5.0.20"}, Hostname: otherWorkerDNS, MachineType: "worker", LastSeen: time.Now().UTC().Format(time.RFC3339)}
	require.NoError(t, cp.state.Create(ctx, other, state.WithCreateOwner(trustd.MemberOwner)))
}

func requestFrom(t *testing.T, addr string, cp *controlPlane, from string, csr []byte) ([]byte, error) {
	t.Helper()

	_, crt, err := trustdclient.RequestCertificate(t.Context(), []string{addr}, bundle(cp.accepted), machineToken, csr,
		trustdclient.FromAddress(netip.MustParseAddr(from)))

	return crt, err
}

// TestServerRefusesNamesTheRequesterDoesNotOwn is the attack of a worker holding the join token
// asking for the names of other nodes.
func TestServerRefusesNamesTheRequesterDoesNotOwn(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	withClusterNames(t, cp)

	srv, err := trustd.New(trustd.Options{State: cp.state, ControlPlanes: []string{"127.0.90.7", "cp-2"}})
	require.NoError(t, err)

	addr := serve(t, srv)

	for _, tc := range []struct {
		name    string
		req     csrRequest
		refused string
	}{
		{name: "own address and names", req: csrRequest{commonName: "worker-3", dnsNames: []string{"worker-3"}, ips: []string{workerAddress}}},
		{name: "a second address and certSANs", req: csrRequest{commonName: "worker-3", dnsNames: []string{"node3.example.test"}, ips: []string{workerAddress, "10.7.0.3", "fd00::3"}}},
		{name: "loopback for a loopback requester", req: csrRequest{commonName: "worker-3", dnsNames: []string{"localhost"}, ips: []string{workerAddress, "127.0.0.1"}}},
		{name: "the control plane's address", req: csrRequest{commonName: "worker-3", ips: []string{workerAddress, cpAddress}}, refused: "IP SAN 127.0.90.2 is an address of this control plane"},
		{name: "the control plane's second address", req: csrRequest{commonName: "worker-3", ips: []string{workerAddress, "10.5.0.2"}}, refused: "IP SAN 10.5.0.2 is an address of this control plane"},
		{name: "the control plane's hostname", req: csrRequest{commonName: "worker-3", dnsNames: []string{"CP-1"}, ips: []string{workerAddress}}, refused: `DNS SAN "CP-1" is the name of this control plane`},
		{name: "the control plane's hostname as CN", req: csrRequest{commonName: cpHostname, ips: []string{workerAddress}}, refused: `common name "cp-1" is the name of this control plane`},
		{name: "the endpoint host", req: csrRequest{commonName: "worker-3", dnsNames: []string{endpointHost}, ips: []string{workerAddress}}, refused: `DNS SAN "cp.example.test" is the name of the control-plane endpoint`},
		{name: "another worker's address", req: csrRequest{commonName: "worker-3", ips: []string{workerAddress, "10.5.0.20"}}, refused: "IP SAN 10.5.0.20 is an address of member 127.0.90.20"},
		{name: "another worker's hostname", req: csrRequest{commonName: "worker-3", dnsNames: []string{otherWorkerDNS}, ips: []string{workerAddress}}, refused: `is the name of member 127.0.90.20`},
		{name: "a configured control plane's address", req: csrRequest{commonName: "worker-3", ips: []string{workerAddress, "127.0.90.7"}}, refused: "IP SAN 127.0.90.7 is an address of a configured control plane"},
		{name: "a configured control plane's name", req: csrRequest{commonName: "worker-3", dnsNames: []string{"cp-2"}, ips: []string{workerAddress}}, refused: `DNS SAN "cp-2" is the name of a configured control plane`},
		{name: "link-local", req: csrRequest{commonName: "worker-3", ips: []string{workerAddress, "169.254.10.1"}}, refused: "is link-local or multicast"},
		{name: "IPv6 link-local", req: csrRequest{commonName: "worker-3", ips: []string{workerAddress, "fe80::1"}}, refused: "is link-local or multicast"},
		{name: "multicast", req: csrRequest{commonName: "worker-3", ips: []string{workerAddress, "224.0.0.251"}}, refused: "is link-local or multicast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			crtPEM, err := requestFrom(t, addr, cp, workerAddress, makeCSR(t, tc.req))
			if tc.refused == "" {
				require.NoError(t, err)

				crt, err := certs.ParseCertificate(crtPEM)
				require.NoError(t, err)
				assert.Equal(t, tc.req.commonName, crt.Subject.CommonName)

				return
			}

			require.Error(t, err)
			assert.Equal(t, codes.PermissionDenied, status.Code(unwrapStatus(err)), err.Error())
			assert.ErrorContains(t, err, tc.refused)
		})
	}
}

// unwrapStatus finds the gRPC status in an error the client wrapped with the endpoint.
func unwrapStatus(err error) error {
	for e := err; e != nil; {
		if _, ok := status.FromError(e); ok {
			return e
		}

		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}

		e = u.Unwrap()
	}

	return err
}

// TestServerRefusesWeakKeysAndSignatures covers the key and signature rules of the CSR policy.
func TestServerRefusesWeakKeysAndSignatures(t *testing.T) {
	t.Parallel()

	ecdsaCP := newControlPlane(t, certs.RootEtcd)
	ecdsaAddr := startServer(t, ecdsaCP.state, nil)

	rsaCP := newControlPlaneWithCA(t, newRSACA(t))
	rsaAddr := startServer(t, rsaCP.state, nil)

	edCP := newControlPlane(t, certs.RootOS)
	edAddr := startServer(t, edCP.state, nil)

	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	require.NoError(t, err)

	bigRSA := loadRSAKey(t, "testdata/rsa-4160.key")

	sha1CSR := func(key crypto.Signer, algorithm x509.SignatureAlgorithm) []byte {
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject:            pkix.Name{CommonName: "worker-1"},
			SignatureAlgorithm: algorithm,
			IPAddresses:        []net.IP{net.ParseIP("127.0.0.1")},
		}, key)
		require.NoError(t, err)

		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}

	tamper := func(csr []byte) []byte {
		block, _ := pem.Decode(csr)
		der := append([]byte(nil), block.Bytes...)
		der[len(der)-1] ^= 0xff

		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}

	for _, tc := range []struct {
		name    string
		addr    string
		cp      *controlPlane
		csr     []byte
		message string
	}{
		{name: "ECDSA with SHA-1", addr: ecdsaAddr, cp: ecdsaCP, csr: sha1CSR(newECDSAKey(t), x509.ECDSAWithSHA1), message: "signature algorithm ECDSA-SHA1 is not accepted"},
		{name: "RSA with SHA-1", addr: rsaAddr, cp: rsaCP, csr: sha1CSR(loadRSAKey(t, ""), x509.SHA1WithRSA), message: "signature algorithm SHA1-RSA is not accepted"},
		{name: "P-224", addr: ecdsaAddr, cp: ecdsaCP, csr: makeCSR(t, csrRequest{key: p224, commonName: "worker-1", ips: []string{"127.0.0.1"}}), message: "ECDSA curve P-224 is not accepted"},
		{name: "RSA over 4096 bits", addr: rsaAddr, cp: rsaCP, csr: makeCSR(t, csrRequest{key: bigRSA, commonName: "worker-1", ips: []string{"127.0.0.1"}}), message: "RSA key is 4160 bits, 2048 to 4096 are accepted"},
		{name: "control character in the CN", addr: edAddr, cp: edCP, csr: makeCSR(t, csrRequest{commonName: "worker\n1", ips: []string{"127.0.0.1"}}), message: `common name "worker\n1" must be the node's host name`},
		{name: "empty CN", addr: edAddr, cp: edCP, csr: makeCSR(t, csrRequest{ips: []string{"127.0.0.1"}}), message: "common name \"\" must be the node's host name"},
		{name: "key family before the signature", addr: edAddr, cp: edCP, csr: tamper(makeCSR(t, csrRequest{key: newECDSAKey(t), commonName: "worker-1", ips: []string{"127.0.0.1"}})), message: "key type is ECDSA but the OS CA is Ed25519"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			_, err := rawCertificate(t, tc.addr, bundle(tc.cp.accepted), machineToken, tc.csr)
			require.Error(t, err)

			st := status.Convert(err)
			assert.Equal(t, codes.InvalidArgument, st.Code(), st.Message())
			assert.Contains(t, st.Message(), tc.message)
		})
	}
}

// TestMembersCannotBePoisoned: a worker records itself under its own address only, and neither
// overwrites another worker's record nor takes the ID of a control plane that has not recorded
// itself yet.
func TestMembersCannotBePoisoned(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)
	addr := startServer(t, cp.state, nil)

	const (
		victim   = "127.0.90.11"
		attacker = "127.0.90.12"
		newCP    = "127.0.90.5"
	)

	_, err := requestFrom(t, addr, cp, victim, makeCSR(t, csrRequest{commonName: "victim", ips: []string{victim}}))
	require.NoError(t, err)

	recorded, err := safe.StateGetByID[*cluster.Member](t.Context(), cp.state, victim)
	require.NoError(t, err)

	// The attacker names the victim's address first (the old member ID rule) and its hostname.
	_, err = requestFrom(t, addr, cp, attacker, makeCSR(t, csrRequest{commonName: "impostor", ips: []string{victim}}))
	require.ErrorContains(t, err, "IP SAN 127.0.90.11 is an address of member 127.0.90.11")

	_, err = requestFrom(t, addr, cp, attacker, makeCSR(t, csrRequest{commonName: "victim", ips: []string{attacker}}))
	require.ErrorContains(t, err, `common name "victim" is the name of member 127.0.90.11`)

	after, err := safe.StateGetByID[*cluster.Member](t.Context(), cp.state, victim)
	require.NoError(t, err)
	assert.Equal(t, *recorded.TypedSpec(), *after.TypedSpec(), "the victim's record is untouched")

	// An address nobody holds yet may be a second address of the attacker, so it is signed, but
	// the member is recorded under the requesting address only: the new control plane's ID stays free.
	_, err = requestFrom(t, addr, cp, attacker, makeCSR(t, csrRequest{commonName: "attacker", ips: []string{newCP}}))
	require.NoError(t, err)

	_, err = safe.StateGetByID[*cluster.Member](t.Context(), cp.state, newCP)
	require.True(t, state.IsNotFoundError(err), "no member under another node's address: %v", err)

	_, err = safe.StateGetByID[*cluster.Member](t.Context(), cp.state, attacker)
	require.True(t, state.IsNotFoundError(err), "a certificate that does not name the requesting address records nothing: %v", err)
}

// TestMembersAreBoundedAndExpire: the member count is capped, and members past the retention or
// squatting this control plane's address are deleted.
func TestMembersAreBoundedAndExpire(t *testing.T) {
	t.Parallel()

	cp := newControlPlane(t, certs.RootOS)

	expired := cluster.NewMember("127.0.90.40")
	*expired.TypedSpec() = cluster.MemberSpec{Addresses: []string{"127.0.90.40"}, Hostname: "gone", MachineType: "worker", LastSeen: time.Now().Add(-30 * 24 * time.Hour).UTC().Format(time.RFC3339)}
	require.NoError(t, cp.state.Create(t.Context(), expired, state.WithCreateOwner(trustd.MemberOwner)))

	oldControlPlane := cluster.NewMember("127.0.90.41")
	*oldControlPlane.TypedSpec() = cluster.MemberSpec{Addresses: []string{"127.0.90.41"}, Hostname: "cp-old", MachineType: "controlplane", LastSeen: expired.TypedSpec().LastSeen}
	require.NoError(t, cp.state.Create(t.Context(), oldControlPlane, state.WithCreateOwner("cluster.SelfMemberController")))

	// A record an earlier version let a worker write under this control plane's address.
	addresses := network.NewNodeAddresses(network.CurrentID)
	addresses.TypedSpec().Addresses = []string{"127.0.90.45/8"}
	require.NoError(t, cp.state.Create(t.Context(), addresses))

	squatter := cluster.NewMember("127.0.90.45")
	*squatter.TypedSpec() = cluster.MemberSpec{Addresses: []string{"127.0.90.45"}, Hostname: "impostor", MachineType: "worker", LastSeen: time.Now().UTC().Format(time.RFC3339)}
	require.NoError(t, cp.state.Create(t.Context(), squatter, state.WithCreateOwner(trustd.MemberOwner)))

	srv, err := trustd.New(trustd.Options{State: cp.state, MaxMembers: 2, MemberRetention: 7 * 24 * time.Hour})
	require.NoError(t, err)

	addr := serve(t, srv)

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		_, err := safe.StateGetByID[*cluster.Member](t.Context(), cp.state, "127.0.90.40")
		assert.True(c, state.IsNotFoundError(err), "the expired worker is deleted")

		_, err = safe.StateGetByID[*cluster.Member](t.Context(), cp.state, "127.0.90.45")
		assert.True(c, state.IsNotFoundError(err), "a worker's record under this control plane's address is deleted")
	}, 10*time.Second, 10*time.Millisecond)

	for i, from := range []string{"127.0.90.42", "127.0.90.43", "127.0.90.44"} {
		_, err := requestFrom(t, addr, cp, from, makeCSR(t, csrRequest{commonName: "worker-" + string(rune('a'+i)), ips: []string{from}}))
		require.NoError(t, err, "past the cap the worker is still signed for")
	}

	members, err := safe.StateListAll[*cluster.Member](t.Context(), cp.state)
	require.NoError(t, err)

	var ids []string
	for m := range members.All() {
		ids = append(ids, m.Metadata().ID())
	}

	assert.ElementsMatch(t, []string{"127.0.90.41", "127.0.90.42", "127.0.90.43"}, ids, "a control plane's record is never collected; the third worker is past the cap")
}

// newControlPlaneWithCA is newControlPlane with a given CA.
func newControlPlaneWithCA(t *testing.T, ca *certs.CA) *controlPlane {
	t.Helper()

	cp := newControlPlane(t, certs.RootOS)
	cp.ca = ca
	cp.accepted = []string{string(ca.CrtPEM)}

	ctx := t.Context()

	_, err := safe.StateUpdateWithConflicts(ctx, cp.state, pki.NewRootSecret(pki.RootOS).Metadata(), func(r *pki.RootSecret) error {
		r.TypedSpec().IssuingCert, r.TypedSpec().IssuingKey = string(ca.CrtPEM), string(ca.KeyPEM)

		return nil
	})
	require.NoError(t, err)

	_, err = safe.StateUpdateWithConflicts(ctx, cp.state, pki.NewAcceptedCA(pki.RootOS).Metadata(), func(r *pki.AcceptedCA) error {
		r.TypedSpec().Certificates = cp.accepted

		return nil
	})
	require.NoError(t, err)

	_, err = safe.StateUpdateWithConflicts(ctx, cp.state, pki.NewNodeCertificate(pki.CertTrustd).Metadata(), func(r *pki.NodeCertificate) error {
		r.TypedSpec().Certificate, r.TypedSpec().Key = issueServerCert(t, ca)

		return nil
	})
	require.NoError(t, err)

	return cp
}

// newRSACA makes a 2048-bit RSA CA from the 2048-bit test key.
func newRSACA(t *testing.T) *certs.CA {
	t.Helper()

	key := loadRSAKey(t, "")
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "rsa test ca"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}

	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	require.NoError(t, err)

	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)

	ca, err := certs.LoadCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	require.NoError(t, err)

	return ca
}

// loadRSAKey reads a test key; "" is testdata/rsa-2048.key. Generating large RSA keys takes seconds.
func loadRSAKey(t *testing.T, path string) *rsa.PrivateKey {
	t.Helper()

	if path == "" {
		path = "testdata/rsa-2048.key"
	}

	data, err := os.ReadFile(path)
	require.NoError(t, err)

	block, _ := pem.Decode(data)
	require.NotNil(t, block)

	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	require.NoError(t, err)

	return key.(*rsa.PrivateKey)
}
