package api

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap/zaptest"

	"github.com/nodepki/nodepki/resources/network"
)

// overrunState fails the first watch of each resource with an Errored event, as inmem does on a
// history buffer overrun.
type overrunState struct {
	state.State

	watches atomic.Int32
}

func (s *overrunState) Watch(ctx context.Context, ptr resource.Pointer, ch chan<- state.Event, opts ...state.WatchOption) error {
	if s.watches.Add(1) == 1 {
		go func() {
			select {
			case ch <- state.Event{Type: state.Errored, Error: errors.New("buffer overrun")}:
			case <-ctx.Done():
			}
		}()

		return nil
	}

	return s.State.Watch(ctx, ptr, ch, opts...)
}

func TestWatchRecoversFromErrored(t *testing.T) {
	t.Parallel()

	st := &overrunState{State: state.WrapCore(namespaced.NewState(inmem.Build))}

	addresses := network.NewNodeAddresses(network.CurrentID)
	addresses.TypedSpec().Addresses = []string{"10.5.0.2"}
	require.NoError(t, st.Create(t.Context(), addresses))

	ctx, cancel := context.WithCancel(t.Context())
	applied := make(chan resource.Resource, 4)

	var wg sync.WaitGroup

	wg.Go(func() {
		watchResource(ctx, st, addresses.Metadata(), zaptest.NewLogger(t), func(r resource.Resource) { applied <- r })
	})

	got := <-applied
	require.NotNil(t, got)
	assert.Equal(t, []string{"10.5.0.2"}, got.(*network.NodeAddresses).TypedSpec().Addresses)
	assert.Equal(t, int32(2), st.watches.Load())

	cancel()
	wg.Wait()
}
