package pki

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/ctxtime"
)

// DerivedController produces all resources of one type at once, as a function of its inputs.
//
// It is a bare controller because the resources it produces are not one per input, which is what
// cosi's transform and qtransform controllers map: one machine config defines a root per CA, a SAN
// set per server family and a request per leaf. Each pass derives the full set, writes each
// resource with Modify (nothing is written when it is unchanged) and tears down the resources no
// longer derived, destroying them once the controllers that consume them have removed their
// finalizers (it is woken for that by its own outputs as destroy-ready inputs).
type DerivedController[S typed.DeepCopyable[S], E typed.Extension] struct {
	name   string
	inputs []controller.Input
	derive deriveFunc[S]
	// labels gives the labels of the resource holding a spec.
	labels func(S) map[string]string
	// minInterval, when set, is the least time between the starts of two passes: input changes
	// that arrive sooner wait, and one pass covers them all.
	minInterval time.Duration
}

// deriveFunc returns every resource to produce by ID; ready is false while an input is missing,
// and the pass then leaves the outputs as they are.
type deriveFunc[S any] func(ctx context.Context, r controller.Reader, logger *zap.Logger) (specs map[resource.ID]S, ready bool, err error)

func newDerivedController[S typed.DeepCopyable[S], E typed.Extension](name string, inputs []controller.Input, derive deriveFunc[S]) *DerivedController[S, E] {
	noLabels := func(S) map[string]string { return nil }

	return &DerivedController[S, E]{name: name, inputs: inputs, derive: derive, labels: noLabels}
}

// withLabels labels each output with what labels gives for its spec.
func (ctrl *DerivedController[S, E]) withLabels(labels func(S) map[string]string) *DerivedController[S, E] {
	ctrl.labels = labels

	return ctrl
}

// withMinInterval makes a summary controller cover a burst of input changes (a rotation step
// rewrites every certificate's status within milliseconds) with two passes, the first change's and
// one at most d later, rather than a pass for each change.
func (ctrl *DerivedController[S, E]) withMinInterval(d time.Duration) *DerivedController[S, E] {
	ctrl.minInterval = d

	return ctrl
}

// Name implements controller.Controller interface.
func (ctrl *DerivedController[S, E]) Name() string {
	return ctrl.name
}

// Inputs implements controller.Controller interface.
func (ctrl *DerivedController[S, E]) Inputs() []controller.Input {
	rd := ctrl.definition()

	return append(slices.Clone(ctrl.inputs), controller.Input{Namespace: rd.DefaultNamespace, Type: rd.Type, Kind: controller.InputDestroyReady})
}

// Outputs implements controller.Controller interface.
func (ctrl *DerivedController[S, E]) Outputs() []controller.Output {
	return []controller.Output{{Type: ctrl.definition().Type, Kind: controller.OutputExclusive}}
}

func (ctrl *DerivedController[S, E]) definition() meta.ResourceDefinitionSpec {
	var ext E

	return ext.ResourceDefinition()
}

func (ctrl *DerivedController[S, E]) newResource(id resource.ID) *typed.Resource[S, E] {
	rd := ctrl.definition()

	var spec S

	return typed.NewResource[S, E](resource.NewMetadata(rd.DefaultNamespace, rd.Type, id, resource.VersionUndefined), spec)
}

// Run implements controller.Controller interface.
func (ctrl *DerivedController[S, E]) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	var last time.Time

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		}

		if wait := ctrl.minInterval - time.Since(last); wait > 0 {
			if ctxtime.Sleep(ctx, wait) != nil {
				return nil //nolint:nilerr // the context ended: the controller stops, as at the top of the loop
			}

			// The pass reads every input as it is now: a change that arrived during the wait is
			// covered by it.
			select {
			case <-r.EventCh():
			default:
			}
		}

		last = time.Now()

		specs, ready, err := ctrl.derive(ctx, r, logger)
		if err != nil {
			return err
		}

		if ready {
			if err = ctrl.write(ctx, r, specs); err != nil {
				return err
			}
		}

		r.ResetRestartBackoff()
	}
}

func (ctrl *DerivedController[S, E]) write(ctx context.Context, r controller.Runtime, specs map[resource.ID]S) error {
	existing, err := safe.ReaderListAll[*typed.Resource[S, E]](ctx, r)
	if err != nil {
		return fmt.Errorf("error listing %s: %w", ctrl.definition().Type, err)
	}

	for _, id := range slices.Sorted(maps.Keys(specs)) {
		if res, ok := existing.Find(func(res *typed.Resource[S, E]) bool { return res.Metadata().ID() == id }); ok && ctrl.unchanged(res, specs[id]) {
			// Modify would read it again only to find nothing to write; summary controllers run a
			// pass for every input written and mostly derive what they already hold.
			continue
		}

		err = safe.WriterModify(ctx, r, ctrl.newResource(id), func(res *typed.Resource[S, E]) error {
			*res.TypedSpec() = specs[id]

			for k, v := range ctrl.labels(specs[id]) {
				res.Metadata().Labels().Set(k, v)
			}

			return nil
		})

		switch {
		case err == nil:
		case state.IsPhaseConflictError(err):
			// Being torn down from an earlier pass: it is created again once destroyed, which wakes
			// this controller.
		default:
			return fmt.Errorf("error writing %s %q: %w", ctrl.definition().Type, id, err)
		}
	}

	for res := range existing.All() {
		md := res.Metadata()

		_, keep := specs[md.ID()]
		if (keep && md.Phase() == resource.PhaseRunning) || md.Owner() != ctrl.name {
			continue
		}

		ready, err := r.Teardown(ctx, md)
		if err != nil {
			return fmt.Errorf("error tearing down %s %q: %w", md.Type(), md.ID(), err)
		}

		if !ready {
			continue
		}

		if err = r.Destroy(ctx, md); err != nil && !state.IsNotFoundError(err) {
			return fmt.Errorf("error destroying %s %q: %w", md.Type(), md.ID(), err)
		}

		if keep {
			// Wanted again since its teardown began: the next pass creates it afresh.
			r.QueueReconcile()
		}
	}

	return nil
}

// unchanged reports whether an existing output already holds spec, as this controller's and
// running: the comparison Modify makes, without reading the resource again.
func (ctrl *DerivedController[S, E]) unchanged(res *typed.Resource[S, E], spec S) bool {
	md := res.Metadata()

	if md.Owner() != ctrl.name || md.Phase() != resource.PhaseRunning || !reflect.DeepEqual(*res.TypedSpec(), spec) {
		return false
	}

	for k, v := range ctrl.labels(spec) {
		if got, ok := md.Labels().Get(k); !ok || got != v {
			return false
		}
	}

	return true
}
