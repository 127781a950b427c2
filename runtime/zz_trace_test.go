package runtime_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/pki"
	"github.com/nodepki/nodepki/runtime"
)

func TestZZTrace(t *testing.T) {
	rt, err := runtime.New(runtime.Options{Addresses: nodeAddresses, Hostname: "node-1"})
	require.NoError(t, err)

	ctx := start(t, rt)
	a, b, issuerA, issuerB := rotationConfigs(t)
	w := newReissueWaiter(ctx, t, rt.State())

	require.NoError(t, rt.SetMachineConfig(ctx, a))
	w.wait(ctx, t, issuerA)

	ev := make(chan state.Event, 1024)
	for _, md := range []*resource.Metadata{
		pki.NewRootSecret("").Metadata(), pki.NewAcceptedCA("").Metadata(), pki.NewCertSAN("").Metadata(),
		pki.NewNodeCertificate("").Metadata(), pki.NewCertificateStatus("").Metadata(), config.NewMachineConfig("").Metadata(),
	} {
		require.NoError(t, rt.State().WatchKind(ctx, md, ev))
	}

	for i := range 6 {
		raw, iss := b, issuerB
		if i%2 == 1 {
			raw, iss = a, issuerA
		}
		start := time.Now()
		require.NoError(t, rt.SetMachineConfig(ctx, raw))
		w.wait(ctx, t, iss)
		total := time.Since(start)
		time.Sleep(50 * time.Millisecond)
		var lines []string
	drain:
		for {
			select {
			case e := <-ev:
				lines = append(lines, fmt.Sprintf("%6dus %s %s", e.Resource.Metadata().Updated().Sub(start).Microseconds(), e.Resource.Metadata().Type()[:8], e.Resource.Metadata().ID()))
			default:
				break drain
			}
		}
		if i >= 4 {
			t.Logf("iteration %d total %v", i, total)
			for _, l := range lines {
				t.Log(l)
			}
		}
	}
}
