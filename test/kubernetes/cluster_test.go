package kubernetes_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/cluster"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/resources/kubernetes"
)

// kubeClusterFirst is the first address of the 3-control-plane cluster of TestClusterCreateKubernetes.
const kubeClusterFirst = "127.0.113.2"

// TestClusterCreateKubernetes creates a cluster of 3 control planes and a worker with
// `nodepkictl cluster create --kubernetes`: every control plane runs etcd and a kube-apiserver
// supervised by nodepkid, and the admin kubeconfig of <state>/kubeconfig works on each of them.
// It then checks the supervision: a changed service-account key restarts the kube-apiservers one
// at a time, a kube-apiserver outlives a crash of its nodepkid and is adopted, and a crashed
// kube-apiserver is started again.
func TestClusterCreateKubernetes(t *testing.T) {
	requireTools(t)

	c := createKubeCluster(t, kubeClusterFirst, 3, 1)
	controlPlanes := c.ControlPlanes()

	info, err := os.Stat(c.Kubeconfig)
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(c.Dir, "kubeconfig"), c.Kubeconfig)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	restConfig, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	require.NoError(t, err)

	caFile := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(caFile, restConfig.CAData, 0o600))

	t.Run("kubectl and client-go on every kube-apiserver", func(t *testing.T) {
		for _, cp := range controlPlanes {
			server := "https://" + cp + ":6443"

			out, err := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", c.Kubeconfig, "--server", server, "get", "--raw", "/readyz").CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Equal(t, "ok", string(out), cp)

			out, err = exec.CommandContext(t.Context(), kubectl, "--kubeconfig", c.Kubeconfig, "--server", server, "auth", "whoami",
				"-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}").CombinedOutput()
			require.NoError(t, err, "%s", out)
			assert.Equal(t, "admin [\"system:masters\",\"system:authenticated\"]", string(out), cp)

			onCP := *restConfig
			onCP.Host = server
			requireNamespaces(t, &onCP)
		}
	})

	t.Run("the component kubeconfigs authenticate on their control plane's kube-apiserver", func(t *testing.T) {
		for _, n := range c.Nodes[:len(controlPlanes)] {
			for file, want := range map[string]string{
				kubepki.ControllerManagerKubeconfigFile: `system:kube-controller-manager ["system:kube-controller-manager","system:authenticated"]`,
				kubepki.SchedulerKubeconfigFile:         `system:kube-scheduler ["system:kube-scheduler","system:authenticated"]`,
				kubepki.AdminKubeconfigFile:             `talos:admin ["system:masters","system:authenticated"]`,
			} {
				path := filepath.Join(n.StateDir, "secrets", "kubernetes", file)

				server, err := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", path, "config", "view", "-o", "jsonpath={.clusters[0].cluster.server}").CombinedOutput()
				require.NoError(t, err, "%s", server)
				assert.Equal(t, "https://"+n.Address+":6443", string(server), path)

				out, err := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", path, "auth", "whoami",
					"-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}").CombinedOutput()
				require.NoError(t, err, "%s: %s", path, out)
				assert.Equal(t, want, string(out), path)
			}
		}
	})

	t.Run("a changed service-account key restarts the kube-apiservers one at a time", func(t *testing.T) {
		before := apiServerStatuses(t, c)

		key, err := certs.NewServiceAccountKey()
		require.NoError(t, err)

		pub, err := certs.PublicKeyPEM(key)
		require.NoError(t, err)

		probe := startReadyzProber(t, controlPlanes, caFile)
		started := time.Now()

		out, err := exec.CommandContext(t.Context(), nodepkictl, "--talosconfig", c.Talosconfig, "-n", strings.Join(controlPlanes, ","),
			"patch", "machineconfig", "--patch",
			fmt.Sprintf(`[{"op": "add", "path": "/cluster/acceptedServiceAccountKeys", "value": [{"key": %q}]}]`, base64.StdEncoding.EncodeToString(pub)),
		).CombinedOutput()
		require.NoError(t, err, "%s", out)

		// Each kube-apiserver is restarted once, onto the files' new startup digest, and is ready.
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			for _, cp := range controlPlanes {
				status, files, err := apiServerStatus(t.Context(), c, cp)
				if !assert.NoError(ct, err) {
					return
				}

				assert.Equal(ct, before[cp].Restarts+1, status.Restarts, cp)
				assert.Equal(ct, files.StartupDigest, status.StartupDigest, cp)
				assert.True(ct, status.Ready, "%s: %s %s", cp, status.State, status.LastError)
			}
		}, 4*time.Minute, 500*time.Millisecond)

		results := probe.stop()
		t.Logf("every kube-apiserver restarted %s after the patch", time.Since(started).Round(100*time.Millisecond))

		for _, cp := range controlPlanes {
			t.Logf("- %s: not ready for %s", cp, results.unready[cp].Round(100*time.Millisecond))
		}

		assert.LessOrEqual(t, results.maxUnreadyAtOnce, 1, "two kube-apiservers were not ready at once: %v", results.overlap)
	})

	last := c.Nodes[len(controlPlanes)-1]

	t.Run("kube-apiserver outlives a crash of nodepkid and is adopted", func(t *testing.T) {
		before := apiServerStatuses(t, c)[last.Address]

		require.NoError(t, c.Kill(last.Name))
		require.NoError(t, kubepki.Ready(t.Context(), "https://"+last.Address+":6443", caFile, 5*time.Second),
			"kube-apiserver serves while its nodepkid is down")

		require.NoError(t, c.Start(last.Name))

		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			status, _, err := apiServerStatus(t.Context(), c, last.Address)
			if assert.NoError(ct, err) {
				assert.Equal(ct, before.PID, status.PID, "the same process, adopted")
				assert.True(ct, status.Ready, "%s %s", status.State, status.LastError)
			}
		}, time.Minute, 200*time.Millisecond)
	})

	t.Run("a crashed kube-apiserver is started again", func(t *testing.T) {
		before := apiServerStatuses(t, c)[last.Address]

		require.NoError(t, syscall.Kill(before.PID, syscall.SIGKILL))

		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			status, _, err := apiServerStatus(t.Context(), c, last.Address)
			if assert.NoError(ct, err) {
				assert.NotEqual(ct, before.PID, status.PID)
				assert.Equal(ct, before.Restarts+1, status.Restarts)
				assert.True(ct, status.Ready, "%s %s", status.State, status.LastError)
			}
		}, 2*time.Minute, 200*time.Millisecond)

		log, err := os.ReadFile(last.Log)
		require.NoError(t, err)
		assert.Contains(t, string(log), "kube-apiserver exited")
	})
}

// createKubeCluster runs `nodepkictl cluster create --kubernetes`; the cluster is destroyed when
// the test ends, after printing the logs of a failed test.
func createKubeCluster(t *testing.T, first string, controlPlanes, workers int) *cluster.Cluster {
	t.Helper()

	dir := filepath.Join(t.TempDir(), "cluster")

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	out, err := exec.CommandContext(ctx, nodepkictl, "cluster", "create", "--name", "kube",
		"--controlplanes", fmt.Sprint(controlPlanes), "--workers", fmt.Sprint(workers), "--first-address", first,
		"--kubernetes", "--etcd-binary", etcd, "--kube-apiserver-binary", kubeAPIServer, "--daemon", nodepkid, "--state", dir,
	).CombinedOutput()
	t.Logf("cluster create:\n%s", out)

	c, loadErr := cluster.Load(dir)
	if loadErr == nil {
		t.Cleanup(func() {
			if t.Failed() {
				for _, n := range c.Nodes {
					for _, log := range []string{n.Log, filepath.Join(n.StateDir, "kube-apiserver.log")} {
						if data, err := os.ReadFile(log); err == nil {
							t.Logf("%s:\n%s", log, tail(data, 6000))
						}
					}
				}
			}

			require.NoError(t, c.Destroy())
		})
	}

	require.NoError(t, err)
	require.NoError(t, loadErr)

	for _, cp := range c.ControlPlanes() {
		assert.Contains(t, string(out), "- kube-apiserver on "+cp+": ready", "progress names every kube-apiserver")
	}

	assert.Contains(t, string(out), "admin kubeconfig written to "+c.Kubeconfig)

	return c
}

func tail(data []byte, n int) []byte {
	return data[max(0, len(data)-n):]
}

// apiServerStatus reads a control plane's APIServerStatus and APIServerFiles through its node API.
func apiServerStatus(ctx context.Context, c *cluster.Cluster, node string) (*kubernetes.APIServerStatusSpec, *kubernetes.APIServerFilesSpec, error) {
	cl, err := c.Connect(ctx)
	if err != nil {
		return nil, nil, err
	}

	defer cl.Close()

	ctx = cl.WithNode(ctx, node)

	status, err := safe.StateGetByID[*kubernetes.APIServerStatus](ctx, cl.COSI(), kubernetes.APIServerStatusID)
	if err != nil {
		return nil, nil, err
	}

	files, err := safe.StateGetByID[*kubernetes.APIServerFiles](ctx, cl.COSI(), kubernetes.APIServerFilesID)
	if err != nil {
		return nil, nil, err
	}

	return status.TypedSpec(), files.TypedSpec(), nil
}

func apiServerStatuses(t *testing.T, c *cluster.Cluster) map[string]kubernetes.APIServerStatusSpec {
	t.Helper()

	out := map[string]kubernetes.APIServerStatusSpec{}

	for _, cp := range c.ControlPlanes() {
		status, _, err := apiServerStatus(t.Context(), c, cp)
		require.NoError(t, err)
		require.True(t, status.Ready, "%s: %s %s", cp, status.State, status.LastError)

		out[cp] = *status
	}

	return out
}

// readyzProber calls /readyz on every kube-apiserver, all at once, every 100 ms.
type readyzProber struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	results readyzResults
}

type readyzResults struct {
	// unready is how long each kube-apiserver was seen not ready, in probe intervals.
	unready map[string]time.Duration
	// maxUnreadyAtOnce is the most kube-apiservers not ready in one round; overlap names them.
	maxUnreadyAtOnce int
	overlap          []string
}

const readyzInterval = 100 * time.Millisecond

func startReadyzProber(t *testing.T, controlPlanes []string, caFile string) *readyzProber {
	t.Helper()

	ctx, cancel := context.WithCancel(context.Background())
	p := &readyzProber{cancel: cancel, done: make(chan struct{}), results: readyzResults{unready: map[string]time.Duration{}}}

	go func() {
		defer close(p.done)

		tick := time.NewTicker(readyzInterval)
		defer tick.Stop()

		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}

			var (
				wg       sync.WaitGroup
				mu       sync.Mutex
				notReady []string
			)

			for _, cp := range controlPlanes {
				wg.Go(func() {
					if err := kubepki.Ready(ctx, "https://"+cp+":6443", caFile, time.Second); err != nil && ctx.Err() == nil {
						mu.Lock()
						notReady = append(notReady, fmt.Sprintf("%s: %v", cp, err))
						mu.Unlock()
					}
				})
			}

			wg.Wait()
			p.record(controlPlanes, notReady)
		}
	}()

	return p
}

func (p *readyzProber) record(controlPlanes, notReady []string) {
	p.mu.Lock()
	defer p.mu.Unlock()

	for _, cp := range controlPlanes {
		for _, n := range notReady {
			if strings.HasPrefix(n, cp+":") {
				p.results.unready[cp] += readyzInterval
			}
		}
	}

	if len(notReady) > p.results.maxUnreadyAtOnce {
		p.results.maxUnreadyAtOnce = len(notReady)
		p.results.overlap = notReady
	}
}

func (p *readyzProber) stop() readyzResults {
	p.cancel()
	<-p.done

	p.mu.Lock()
	defer p.mu.Unlock()

	return p.results
}
