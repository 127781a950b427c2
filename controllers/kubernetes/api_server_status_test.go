package kubernetes_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlkubernetes "github.com/nodepki/nodepki/controllers/kubernetes"
	ctrlnetwork "github.com/nodepki/nodepki/controllers/network"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/resources/etcd"
	"github.com/nodepki/nodepki/resources/kubernetes"
)

const statusNode = "127.0.110.5"

// runAPIServerStatus runs the graph of a control plane whose kube-apiserver is binary. The etcd
// member is not run: the test writes its status.
func runAPIServerStatus(t *testing.T, binary string) (*ctest.Env, string) {
	t.Helper()

	stateDir := t.TempDir()
	addr := netip.MustParseAddr(statusNode)

	env := ctest.Run(t,
		&ctrlnetwork.NodeAddressesController{Addresses: []netip.Addr{addr}},
		ctrlpki.NewRootSecretsController(),
		ctrlpki.NewAcceptedCAsController(),
		ctrlpki.NewCertSANsController("cp-1"),
		ctrlpki.NewCertificateRequestsController(ctrlpki.CertificateRequestsOptions{Hostname: "cp-1"}),
		ctrlpki.NewNodeCertificatesController(ctrlpki.NodeCertificatesOptions{}),
		ctrlkubernetes.NewAPIServerFilesController(filepath.Join(stateDir, "secrets", "kubernetes")),
		&ctrlkubernetes.APIServerStatusController{
			Binary: binary, StateDir: stateDir, Address: addr,
			ProbeInterval: 50 * time.Millisecond, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		},
	)

	return env, stateDir
}

func setEtcdHealthy(t *testing.T, env *ctest.Env) {
	t.Helper()

	member := etcd.NewMemberStatus(etcd.LocalMemberID)
	member.TypedSpec().State = etcd.StateRunning
	member.TypedSpec().Healthy = true
	require.NoError(t, env.State.Create(env.Ctx, member))
}

func TestAPIServerStatusWaitsForEtcd(t *testing.T) {
	env, _ := runAPIServerStatus(t, "/nonexistent/kube-apiserver")
	env.SetMachineConfig(t, ctest.ControlPlane(ctest.NewSecrets(t)))

	rtestutils.AssertResource(env.Ctx, t, env.State, kubernetes.APIServerStatusID, func(res *kubernetes.APIServerStatus, a *assert.Assertions) {
		spec := res.TypedSpec()
		a.Equal(kubernetes.StateWaiting, spec.State)
		a.Contains(spec.LastError, "kube-apiserver on "+statusNode+" waits for the node's etcd member to be healthy")
		a.Equal("https://"+statusNode+":6443", spec.URL)
		a.False(spec.Running)
	})
}

func TestAPIServerStatusMissingBinary(t *testing.T) {
	env, _ := runAPIServerStatus(t, "/nonexistent/kube-apiserver")
	env.SetMachineConfig(t, ctest.ControlPlane(ctest.NewSecrets(t)))
	setEtcdHealthy(t, env)

	rtestutils.AssertResource(env.Ctx, t, env.State, kubernetes.APIServerStatusID, func(res *kubernetes.APIServerStatus, a *assert.Assertions) {
		spec := res.TypedSpec()
		a.Equal(kubernetes.StateFailed, spec.State)
		a.Contains(spec.LastError, "kube-apiserver on "+statusNode+": binary /nonexistent/kube-apiserver")
		a.Contains(spec.LastError, "fix --kube-apiserver-binary")
		a.False(spec.Running)
	})
}

// TestAPIServerStatusExitAtStart: a kube-apiserver that exits at once is reported with the last
// line of its log, and started again with backoff.
func TestAPIServerStatusExitAtStart(t *testing.T) {
	binary := filepath.Join(t.TempDir(), "kube-apiserver")
	require.NoError(t, os.WriteFile(binary, []byte("#!/bin/sh\necho 'E1129 run.go:72] \"command failed\" err=\"unknown flag\"' >&2\nexit 1\n"), 0o700))

	env, stateDir := runAPIServerStatus(t, binary)
	env.SetMachineConfig(t, ctest.ControlPlane(ctest.NewSecrets(t)))
	setEtcdHealthy(t, env)

	rtestutils.AssertResource(env.Ctx, t, env.State, kubernetes.APIServerStatusID, func(res *kubernetes.APIServerStatus, a *assert.Assertions) {
		spec := res.TypedSpec()
		a.GreaterOrEqual(spec.Restarts, 2, "started again after each exit")
		a.Contains(spec.LastError, "kube-apiserver on "+statusNode+" exited: exit status 1")
		a.Contains(spec.LastError, `err="unknown flag"`)
		a.Contains(spec.LastError, filepath.Join(stateDir, "kube-apiserver.log"))
	})
}

// TestAPIServerStatusNotOnWorkers runs in a synctest bubble, so that "no status" is checked once
// the controllers have done all they do for a worker's config.
func TestAPIServerStatusNotOnWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		env, _ := runAPIServerStatus(t, "/nonexistent/kube-apiserver")
		env.SetMachineConfig(t, ctest.Worker(ctest.NewSecrets(t)))
		setEtcdHealthy(t, env)

		synctest.Wait()

		statuses, err := safe.StateListAll[*kubernetes.APIServerStatus](env.Ctx, env.State)
		require.NoError(t, err)
		assert.Zero(t, statuses.Len())
	})
}
