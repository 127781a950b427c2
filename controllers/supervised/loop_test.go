package supervised_test

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/controllers/supervised"
	"github.com/nodepki/nodepki/pkg/process"
	"github.com/nodepki/nodepki/resources/etcd"
)

// sleeper supervises a `sleep` process on supervised.Loop and reports it as MemberStatus/local.
type sleeper struct {
	sup process.Supervision
	cfg process.Config
}

func (s *sleeper) Name() string { return "test.SleeperController" }

func (s *sleeper) Inputs() []controller.Input { return []controller.Input{configview.Input()} }

func (s *sleeper) Outputs() []controller.Output {
	return []controller.Output{{Type: etcd.MemberStatusType, Kind: controller.OutputExclusive}}
}

func (s *sleeper) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	s.sup.Name, s.sup.MinBackoff, s.sup.MaxBackoff = "sleep", time.Millisecond, time.Millisecond

	return supervised.Loop[etcd.MemberStatusSpec, etcd.MemberStatusExtension]{
		Sup:           &s.sup,
		ProbeInterval: time.Hour,
		StopGrace:     time.Second,
		StatusID:      etcd.LocalMemberID,
		Reconcile:     s.reconcile,
	}.Run(ctx, r, logger)
}

func (s *sleeper) reconcile(context.Context, controller.Runtime, *zap.Logger) etcd.MemberStatusSpec {
	if s.sup.Proc == nil {
		proc, err := process.Start(s.cfg, "")
		if err != nil {
			return etcd.MemberStatusSpec{State: etcd.StateFailed, LastError: err.Error()}
		}

		s.sup.Started(proc)
	}

	return etcd.MemberStatusSpec{State: etcd.StateRunning, PID: s.sup.Proc.PID, Restarts: s.sup.Restarts}
}

// gone reports whether no process has pid any more.
func gone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// TestLoopFollowsProcessAndMachineType runs a real process: the loop starts it on a control plane,
// starts it again when it dies, and stops it and removes its status when the node becomes a worker.
func TestLoopFollowsProcessAndMachineType(t *testing.T) {
	t.Parallel()

	sleep, err := exec.LookPath("sleep")
	require.NoError(t, err)

	dir := t.TempDir()
	ctrl := &sleeper{cfg: process.Config{
		Name: "sleep", Binary: sleep, Args: []string{"600"}, Marker: "600",
		LogFile: filepath.Join(dir, "sleep.log"), PIDFile: filepath.Join(dir, "sleep.pid"),
	}}

	env := ctest.Run(t, ctrl)
	s := ctest.NewSecrets(t)

	env.SetMachineConfig(t, ctest.ControlPlane(s))

	var first int

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.LocalMemberID, func(res *etcd.MemberStatus, a *assert.Assertions) {
		first = res.TypedSpec().PID
		a.NotZero(first)
		a.Zero(res.TypedSpec().Restarts)
	})

	// A process that dies wakes the loop, which starts it again.
	require.NoError(t, syscall.Kill(first, syscall.SIGKILL))

	var second int

	rtestutils.AssertResource(env.Ctx, t, env.State, etcd.LocalMemberID, func(res *etcd.MemberStatus, a *assert.Assertions) {
		second = res.TypedSpec().PID
		a.NotEqual(first, second)
		a.Equal(1, res.TypedSpec().Restarts)
	})

	// A worker runs no such process and has no status.
	env.SetMachineConfig(t, ctest.Worker(s))

	rtestutils.AssertNoResource[*etcd.MemberStatus](env.Ctx, t, env.State, etcd.LocalMemberID)
	require.Eventually(t, func() bool { return gone(second) }, ctest.DefaultTimeout, 10*time.Millisecond, "process %d still runs", second)
}
