package pki

import (
	"context"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource/typed"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
)

// writeSpec sets the spec of an output resource and returns the resource as written. last is the
// resource as the controller last read or wrote it, or nil: updating it directly saves the two
// reads and three copies of Modify, which add up for the certificate resources, written a dozen
// at a time. If the resource changed since, Modify applies spec to the current one.
func writeSpec[T typed.DeepCopyable[T], E typed.Extension](
	ctx context.Context, r controller.Runtime, last *typed.Resource[T, E], empty *typed.Resource[T, E], spec T,
) (*typed.Resource[T, E], error) {
	if last != nil {
		*last.TypedSpec() = spec

		err := r.Update(ctx, last)
		if err == nil {
			return last, nil
		}

		if !state.IsConflictError(err) {
			return nil, err
		}
	}

	return safe.WriterModifyWithResult(ctx, r, empty, func(res *typed.Resource[T, E]) error {
		*res.TypedSpec() = spec

		return nil
	})
}
