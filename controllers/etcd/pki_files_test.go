package etcd_test

import (
	stdx509 "crypto/x509"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrletcd "github.com/nodepki/nodepki/controllers/etcd"
	ctrlnetwork "github.com/nodepki/nodepki/controllers/network"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/etcd"
	"github.com/nodepki/nodepki/resources/pki"
)

func runPKIFiles(t *testing.T, dir string) *ctest.Env {
	t.Helper()

	return ctest.Run(t,
		&ctrlnetwork.NodeAddressesController{Addresses: []netip.Addr{netip.MustParseAddr("10.5.0.2")}},
		ctrlpki.NewRootSecretsController(),
		ctrlpki.NewAcceptedCAsController(),
		ctrlpki.NewCertSANsController("node-1"),
		ctrlpki.NewCertificateRequestsController(ctrlpki.CertificateRequestsOptions{Hostname: "node-1"}),
		ctrlpki.NewNodeCertificatesController(ctrlpki.NodeCertificatesOptions{}),
		ctrletcd.NewPKIFilesController(dir),
	)
}

func TestPKIFilesLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "secrets", "etcd")
	env := runPKIFiles(t, dir)
	secrets := ctest.NewSecrets(t)
	env.SetMachineConfig(t, ctest.ControlPlane(secrets))

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.PKIFilesID, func(res *etcd.PKIFiles, a *assert.Assertions) {
		a.Equal(dir, res.TypedSpec().Dir)
		a.Equal([]string{secrets.Etcd.Fingerprint(t)}, res.TypedSpec().TrustedFingerprints)
		a.NotEmpty(res.TypedSpec().ServerDigest)
	})

	info, err := os.Stat(dir)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o700), info.Mode().Perm())

	for _, name := range []string{"ca.crt", "server.crt", "server.key", "peer.crt", "peer.key", "admin.crt", "admin.key"} {
		info, err = os.Stat(filepath.Join(dir, name))
		require.NoError(t, err, name)
		assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), name)
	}

	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 7, "no CA key, no leftovers")

	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	require.NoError(t, err)
	assert.Equal(t, string(secrets.Etcd.Crt), string(ca), "ca.crt is the etcd CA certificate, without its key")

	pool := stdx509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(ca))

	for _, tc := range []struct {
		file string
		eku  stdx509.ExtKeyUsage
		dns  string
	}{
		{"server.crt", stdx509.ExtKeyUsageServerAuth, "localhost"},
		{"peer.crt", stdx509.ExtKeyUsageServerAuth, "node-1"},
		{"peer.crt", stdx509.ExtKeyUsageClientAuth, ""},
		{"admin.crt", stdx509.ExtKeyUsageClientAuth, ""},
	} {
		data, err := os.ReadFile(filepath.Join(dir, tc.file))
		require.NoError(t, err)

		crt, err := certs.ParseCertificate(data)
		require.NoError(t, err)

		_, err = crt.Verify(stdx509.VerifyOptions{Roots: pool, DNSName: tc.dns, KeyUsages: []stdx509.ExtKeyUsage{tc.eku}})
		assert.NoError(t, err, "%s verifies against ca.crt for %v", tc.file, tc.eku)
	}
}

func TestPKIFilesTrustChangeVersusRenewal(t *testing.T) {
	dir := t.TempDir()
	env := runPKIFiles(t, dir)
	secrets := ctest.NewSecrets(t)
	doc := ctest.ControlPlane(secrets)
	doc.Machine.CertificateLifetimes = &machineconfig.CertificateLifetimes{Etcd: machineconfig.Duration(machineconfig.MinCertificateLifetime)}
	env.SetMachineConfig(t, doc)

	var first etcd.PKIFilesSpec

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.PKIFilesID, func(res *etcd.PKIFiles, a *assert.Assertions) {
		a.NotEmpty(res.TypedSpec().ServerDigest)
		first = *res.TypedSpec()
	})

	// The etcd leaves live for 10 s: renewals change its digest, never the trust bundle's.
	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.PKIFilesID, func(res *etcd.PKIFiles, a *assert.Assertions) {
		a.NotEqual(first.ServerDigest, res.TypedSpec().ServerDigest)
		a.Equal(first.TrustBundleDigest, res.TypedSpec().TrustBundleDigest)
		a.Equal(first.PeerDigest, res.TypedSpec().PeerDigest)
	})

	// Accepting a new CA changes the trust bundle; making it the issuing CA does not change it again.
	next := ctest.NewCA(t, certs.RootEtcd)
	doc.Cluster.Etcd.AcceptedCAs = append(doc.Cluster.Etcd.AcceptedCAs, next.Accepted())
	env.SetMachineConfig(t, doc)

	var accepted string

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.PKIFilesID, func(res *etcd.PKIFiles, a *assert.Assertions) {
		a.Len(res.TypedSpec().TrustedFingerprints, 2)
		accepted = res.TypedSpec().TrustBundleDigest
	})
	require.NotEqual(t, first.TrustBundleDigest, accepted)

	doc.Cluster.Etcd.CA = next.Pair()
	doc.Cluster.Etcd.AcceptedCAs = []*machineconfig.Certificate{secrets.Etcd.Accepted()}
	env.SetMachineConfig(t, doc)

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.PKIFilesID, func(res *etcd.PKIFiles, a *assert.Assertions) {
		a.Equal(next.Fingerprint(t), res.TypedSpec().IssuerFingerprint)
		a.Equal(accepted, res.TypedSpec().TrustBundleDigest, "same CAs, same bundle")
	})

	files, err := safe.StateGetByID[*etcd.PKIFiles](env.Ctx, env.State, etcd.PKIFilesID)
	require.NoError(t, err)

	ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	require.NoError(t, err)
	assert.Len(t, files.TypedSpec().TrustedFingerprints, 2)
	assert.Contains(t, string(ca), string(next.Crt))
	assert.Contains(t, string(ca), string(secrets.Etcd.Crt))
}

func TestPKIFilesNotOnWorkers(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "etcd")
	env := runPKIFiles(t, dir)
	env.SetMachineConfig(t, ctest.Worker(ctest.NewSecrets(t)))

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.RootOS, func(*pki.AcceptedCA, *assert.Assertions) {})
	rtestutils.AssertNoResource[*etcd.PKIFiles](env.Ctx, t, env.State, etcd.PKIFilesID)

	_, err := os.Stat(dir)
	assert.ErrorIs(t, err, os.ErrNotExist)
}
