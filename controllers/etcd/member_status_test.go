package etcd_test

import (
	"crypto/tls"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrletcd "github.com/nodepki/nodepki/controllers/etcd"
	ctrlnetwork "github.com/nodepki/nodepki/controllers/network"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/etcd/etcdtest"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/etcd"
)

// runMember runs the graph of a control plane with a supervised etcd member on address and asks
// it to bootstrap; etcdLifetime, when set, is machine.certificateLifetimes.etcd.
func runMember(t *testing.T, binary, address string, etcdLifetime time.Duration) (*ctest.Env, string) {
	t.Helper()

	stateDir := t.TempDir()
	addr := netip.MustParseAddr(address)

	env := ctest.Run(t,
		&ctrlnetwork.NodeAddressesController{Addresses: []netip.Addr{addr}},
		ctrlpki.NewRootSecretsController(),
		ctrlpki.NewAcceptedCAsController(),
		ctrlpki.NewCertSANsController("node-1"),
		ctrlpki.NewCertificateRequestsController(ctrlpki.CertificateRequestsOptions{Hostname: "node-1"}),
		ctrlpki.NewNodeCertificatesController(ctrlpki.NodeCertificatesOptions{}),
		ctrletcd.NewPKIFilesController(filepath.Join(stateDir, "secrets", "etcd")),
		&ctrletcd.MemberStatusController{
			Binary: binary, StateDir: stateDir, Address: addr,
			ProbeInterval: 100 * time.Millisecond, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second,
		},
	)
	doc := ctest.ControlPlane(ctest.NewSecrets(t))
	if etcdLifetime != 0 {
		doc.Machine.CertificateLifetimes = &machineconfig.CertificateLifetimes{Etcd: machineconfig.Duration(etcdLifetime)}
	}

	env.SetMachineConfig(t, doc)

	bootstrap := etcd.NewBootstrap(etcd.BootstrapID)
	bootstrap.TypedSpec().RequestedAt = time.Now().UTC().Format(time.RFC3339)
	require.NoError(t, env.State.Create(env.Ctx, bootstrap))

	return env, stateDir
}

func healthyMember(t *testing.T, env *ctest.Env) etcd.MemberStatusSpec {
	t.Helper()

	var spec etcd.MemberStatusSpec

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.LocalMemberID, func(res *etcd.MemberStatus, a *assert.Assertions) {
		a.True(res.TypedSpec().Healthy, "%+v", res.TypedSpec())
		spec = *res.TypedSpec()
	})

	return spec
}

// TestMemberKeepsRunningThroughRenewals: the etcd leaves live 10 s (machine.certificateLifetimes.etcd,
// its shortest allowed value) and are renewed several times;
// the member serves each new certificate (etcd reads key pairs per connection) and never restarts.
func TestMemberKeepsRunningThroughRenewals(t *testing.T) {
	bins := etcdtest.Require(t)
	env, stateDir := runMember(t, bins.Etcd, "127.0.73.2", 10*time.Second)

	first := healthyMember(t, env)
	require.NotZero(t, first.PID)
	assert.Equal(t, etcd.StateRunning, first.State)

	files, err := safe.StateGetByID[*etcd.PKIFiles](env.Ctx, env.State, etcd.PKIFilesID)
	require.NoError(t, err)

	// Two renewals of the server certificate.
	digests := map[string]bool{files.TypedSpec().ServerDigest: true}

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.PKIFilesID, func(res *etcd.PKIFiles, a *assert.Assertions) {
		digests[res.TypedSpec().ServerDigest] = true
		a.GreaterOrEqual(len(digests), 3, "renewals seen")
		a.Equal(files.TypedSpec().TrustBundleDigest, res.TypedSpec().TrustBundleDigest)
	})

	// etcd serves the certificate on disk, without a restart (polled: a renewal may land between
	// the handshake and the read).
	assert.EventuallyWithT(t, func(c *assert.CollectT) {
		served := servedCertificate(t, "127.0.73.2:2379", filepath.Join(stateDir, "secrets", "etcd"))
		onDisk, err := os.ReadFile(filepath.Join(stateDir, "secrets", "etcd", "server.crt"))
		require.NoError(c, err)

		crt, err := certs.ParseCertificate(onDisk)
		require.NoError(c, err)
		assert.Equal(c, crt.SerialNumber, served.PeerCertificates[0].SerialNumber, "etcd serves the renewed certificate")
	}, 10*time.Second, 100*time.Millisecond)

	last := healthyMember(t, env)
	assert.Equal(t, first.PID, last.PID, "a renewal never restarts etcd")
	assert.Zero(t, last.Restarts)
}

// servedCertificate is the certificate the server presents to a client with the admin key pair.
func servedCertificate(t *testing.T, address, pkiDir string) *tls.ConnectionState {
	t.Helper()

	pair, err := tls.LoadX509KeyPair(filepath.Join(pkiDir, "admin.crt"), filepath.Join(pkiDir, "admin.key"))
	require.NoError(t, err)

	// Only the presented certificate is looked at.
	conn, err := tls.Dial("tcp", address, &tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true})
	require.NoError(t, err)

	defer conn.Close()

	state := conn.ConnectionState()

	return &state
}

// TestMemberRestartedAfterCrash: an etcd killed with SIGKILL is started again, with backoff.
func TestMemberRestartedAfterCrash(t *testing.T) {
	bins := etcdtest.Require(t)
	env, _ := runMember(t, bins.Etcd, "127.0.73.3", 0)

	first := healthyMember(t, env)
	require.NoError(t, syscall.Kill(first.PID, syscall.SIGKILL))

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.LocalMemberID, func(res *etcd.MemberStatus, a *assert.Assertions) {
		a.True(res.TypedSpec().Healthy)
		a.NotEqual(first.PID, res.TypedSpec().PID)
		a.Equal(1, res.TypedSpec().Restarts)
		a.Equal(first.MemberID, res.TypedSpec().MemberID, "same member, same data")
	})
}

// TestMemberMissingBinary: a missing etcd binary is reported in the status; the PKI files are
// still written.
func TestMemberMissingBinary(t *testing.T) {
	env, stateDir := runMember(t, "/nonexistent/etcd", "127.0.73.4", 0)

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.LocalMemberID, func(res *etcd.MemberStatus, a *assert.Assertions) {
		a.Equal(etcd.StateFailed, res.TypedSpec().State)
		a.False(res.TypedSpec().Running)
		a.Contains(res.TypedSpec().LastError, "etcd binary /nonexistent/etcd")
		a.Contains(res.TypedSpec().LastError, "--etcd-binary")
	})

	assert.FileExists(t, filepath.Join(stateDir, "secrets", "etcd", "ca.crt"))
}
