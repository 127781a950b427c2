// Package ctest is the test harness of the controllers: it runs controllers on a real controller
// runtime over an in-memory state, and builds machine configs with freshly generated roots.
package ctest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/controller/runtime"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources"
	"github.com/nodepki/nodepki/resources/config"
)

// DefaultTimeout bounds every test environment, so a hang fails fast.
const DefaultTimeout = 30 * time.Second

// Env is a running controller runtime.
type Env struct {
	// Ctx is done when the test ends or DefaultTimeout passes.
	Ctx   context.Context //nolint:containedctx // the environment's lifetime is the test's
	State state.State
}

// Named is a controller.Controller or a controller.QController.
type Named interface {
	Name() string
}

// Run starts the controllers on a fresh in-memory state with every resource type registered,
// together with configview's MachineConfigViewController, which every config reader needs; the
// runtime stops when the test ends, and a runtime error fails the test.
func Run(t testing.TB, ctrls ...Named) *Env {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), DefaultTimeout)

	st := state.WrapCore(namespaced.NewState(func(ns resource.Namespace) state.CoreState {
		return inmem.NewStateWithOptions(
			inmem.WithHistoryInitialCapacity(8),
			inmem.WithHistoryMaxCapacity(1024),
			inmem.WithHistoryGap(64),
		)(ns)
	}))
	require.NoError(t, resources.Register(ctx, st))

	rt, err := runtime.NewRuntime(st, zaptest.NewLogger(t))
	require.NoError(t, err)

	for _, ctrl := range append([]Named{configview.NewMachineConfigViewController()}, ctrls...) {
		switch ctrl := ctrl.(type) {
		case controller.Controller:
			require.NoError(t, rt.RegisterController(ctrl))
		case controller.QController:
			require.NoError(t, rt.RegisterQController(ctrl))
		default:
			t.Fatalf("%s is neither a controller nor a queue controller", ctrl.Name())
		}
	}

	done := make(chan error, 1)

	go func() { done <- rt.Run(ctx) }()

	t.Cleanup(func() {
		cancel()

		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("controller runtime failed: %v", err)
		}
	})

	return &Env{Ctx: ctx, State: st}
}

// SetMachineConfig creates or replaces the active machine config, as a user would (owner "").
func (env *Env) SetMachineConfig(t testing.TB, doc *machineconfig.Document) {
	t.Helper()

	raw := Marshal(t, doc)

	require.NoError(t, safe.StateModify(env.Ctx, env.State, config.NewMachineConfig(config.ActiveID), func(mc *config.MachineConfig) error {
		mc.TypedSpec().Raw = raw

		return nil
	}))
}

// DeleteMachineConfig removes the active machine config.
func (env *Env) DeleteMachineConfig(t testing.TB) {
	t.Helper()

	require.NoError(t, env.State.Destroy(env.Ctx, config.NewMachineConfig(config.ActiveID).Metadata()))
}

// Marshal encodes a machine config document.
func Marshal(t testing.TB, doc *machineconfig.Document) []byte {
	t.Helper()

	raw, err := yaml.Marshal(doc)
	require.NoError(t, err)

	return raw
}
