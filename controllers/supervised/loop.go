// Package supervised holds the Run loop of the controllers whose subject is a process a control
// plane runs (etcd, kube-apiserver): they wake on process exits and on a probe timer as well as on
// resource events, which cosi's generic controllers do not, and they stop the process when the
// node is not, or no longer, a control plane.
package supervised

import (
	"context"
	"fmt"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/pkg/process"
)

// Loop runs one supervised process and writes its status resource (spec S, extension E).
type Loop[S typed.DeepCopyable[S], E typed.Extension] struct {
	// Sup is the process and its restarts; it outlives a restart of the controller's Run.
	Sup *process.Supervision
	// ProbeInterval is how often Reconcile runs without an event.
	ProbeInterval time.Duration
	// StopGrace is how long the process gets to stop on SIGTERM before SIGKILL.
	StopGrace time.Duration
	// StatusID is the ID of the status resource.
	StatusID resource.ID
	// Reconcile starts, probes or restarts the process and returns its status.
	Reconcile func(ctx context.Context, r controller.Runtime, logger *zap.Logger) S
}

// Run is the controller's Run. The process stops with nodepkid, whichever way Run returns on
// shutdown; after a crash of nodepkid it keeps running, to be adopted by the next one.
func (l Loop[S, E]) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	probe := time.NewTicker(l.ProbeInterval)
	defer probe.Stop()

	defer func() {
		if ctx.Err() != nil {
			l.Sup.Shutdown(logger, l.StopGrace)
		}
	}()

	for {
		exited := l.Sup.Running()

		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-probe.C:
		case <-exited:
			l.Sup.Exited(logger)
		}

		status := l.status()

		if !controlPlane(ctx, r) {
			l.Sup.Shutdown(logger, l.StopGrace)

			if err := r.Destroy(ctx, status.Metadata()); err != nil && !state.IsNotFoundError(err) {
				return fmt.Errorf("error removing %s %q: %w", status.Metadata().Type(), l.StatusID, err)
			}

			continue
		}

		spec := l.Reconcile(ctx, r, logger)

		if err := safe.WriterModify(ctx, r, status, func(res *typed.Resource[S, E]) error {
			*res.TypedSpec() = spec

			return nil
		}); err != nil {
			return fmt.Errorf("error writing %s %q: %w", status.Metadata().Type(), l.StatusID, err)
		}

		r.ResetRestartBackoff()
	}
}

func (l Loop[S, E]) status() *typed.Resource[S, E] {
	var (
		ext  E
		spec S
	)

	rd := ext.ResourceDefinition()

	return typed.NewResource[S, E](resource.NewMetadata(rd.DefaultNamespace, rd.Type, l.StatusID, resource.VersionUndefined), spec)
}

// controlPlane reports whether the node runs the process: only control planes do, and a node
// without a machine config yet waits.
func controlPlane(ctx context.Context, r controller.Reader) bool {
	doc, err := configview.Read(ctx, r)

	return err == nil && doc != nil && doc.Machine.IsControlPlane()
}
