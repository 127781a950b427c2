package integration

import (
	"fmt"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/rotate"
)

// BenchmarkRotateOSCA measures the wall time of a complete OS CA rotation (preflight, plan,
// accept, switch, retire, output, with every verification and the default client grace) on a
// local cluster of real nodepkid processes. Each iteration is a new rotation with its own plan.
func BenchmarkRotateOSCA(b *testing.B) {
	for _, size := range []struct {
		first                  string
		controlPlanes, workers int
	}{
		{"127.0.30.2", 1, 2},
		{"127.0.31.2", 3, 27},
	} {
		b.Run(fmt.Sprintf("nodes=%d", size.controlPlanes+size.workers), func(b *testing.B) {
			c := startCluster(b, size.first, size.controlPlanes, size.workers)
			plans := b.TempDir()

			var worst time.Duration

			i := 0

			for b.Loop() {
				cfg, err := clientconfig.Open(c.Talosconfig)
				require.NoError(b, err)

				cctx, err := cfg.Current()
				require.NoError(b, err)

				api := rotate.NewNodeAPI(rotate.NodeAPIOptions{Endpoints: cctx.Endpoints})

				start := time.Now()

				err = rotate.Run(b.Context(), api, rotate.Options{
					Roots:           []rotate.Root{rotate.RootOS},
					Nodes:           cctx.Nodes,
					Endpoints:       cctx.Endpoints,
					PlanPath:        filepath.Join(plans, fmt.Sprintf("plan-%d.yaml", i)),
					TalosconfigPath: c.Talosconfig,
					ContextName:     cfg.Context,
					Context:         cctx,
					Out:             io.Discard,
				})

				worst = max(worst, time.Since(start))

				require.NoError(b, api.Close())
				require.NoError(b, err)

				i++
			}

			b.ReportMetric(worst.Seconds(), "max-s/rotation")
		})
	}
}
