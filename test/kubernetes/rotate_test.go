package kubernetes_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodepki/nodepki/pkg/cluster"
	"github.com/nodepki/nodepki/pkg/ctxtime"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/pkg/rotate"
)

// rotateFirst is the first address of TestKubernetesRotation's cluster: 3 control planes and a
// worker on 127.0.160.2-5.
const rotateFirst = "127.0.160.2"

// addedSAN is the name a cluster.apiServer.certSANs patch adds to the kube-apiserver certificate.
const addedSAN = "rotated.kuberotate.test"

// TestKubernetesRotation runs 3 control planes (nodepkid with real etcd and kube-apiserver) and a
// worker, then: uses every kube-apiserver with client-go and kubectl through `nodepkictl
// kubeconfig`; checks with openssl the serving certificate and a SAN added by a certSANs patch;
// rotates the Kubernetes CA under load, then the aggregator CA, the service-account key and the
// etcd CA, each with the checks of issue 10 scope 6. The subtests share the cluster and run in
// order: each starts from where the previous one left it.
func TestKubernetesRotation(t *testing.T) {
	requireTools(t)

	c := startKubeCluster(t, rotateFirst, 3, 1)
	cps := c.ControlPlanes()
	dir := t.TempDir()

	// The admin kubeconfig rotate-ca keeps in step: `nodepkictl kubeconfig` of the first control plane.
	kubeconfig := filepath.Join(dir, "kubeconfig")
	out, err := runCLI(t, c, "-n", cps[0], "kubeconfig", kubeconfig, "--merge=false")
	require.NoError(t, err, out)

	t.Run("client-go and kubectl list namespaces on every kube-apiserver", func(t *testing.T) {
		admin, err := kubeconfigCreds(kubeconfig)
		require.NoError(t, err)

		for _, cp := range cps {
			require.NoError(t, admin.listNamespaces(t.Context(), cp), cp)

			out, err := exec.CommandContext(t.Context(), kubectl, "--kubeconfig", kubeconfig, "--server", apiURL(cp),
				"get", "namespaces", "-o", "name").CombinedOutput()
			require.NoError(t, err, "%s: %s", cp, out)
			assert.Contains(t, string(out), "namespace/kube-system", cp)

			// The kubeconfig cluster create wrote works too.
			out, err = exec.CommandContext(t.Context(), kubectl, "--kubeconfig", c.Kubeconfig, "--server", apiURL(cp),
				"get", "--raw", "/readyz").CombinedOutput()
			require.NoError(t, err, "%s: %s", cp, out)
			assert.Equal(t, "ok", string(out), cp)
		}
	})

	t.Run("openssl verifies the serving certificate and sees a certSANs patch without a nodepkid restart", func(t *testing.T) {
		if _, err := exec.LookPath("openssl"); err != nil {
			t.Skip("openssl is not installed")
		}

		for _, cp := range cps {
			out, err := runCLI(t, c, "-n", cp, "patch", "machineconfig", "--patch",
				fmt.Sprintf(`[{"op": "add", "path": "/cluster/apiServer", "value": {"certSANs": [%q]}}]`, addedSAN))
			require.NoError(t, err, "%s: %s", cp, out)
		}

		for i, cp := range cps {
			caFile := filepath.Join(c.Nodes[i].StateDir, "secrets", "kubernetes", kubepki.ClientCAFile)

			var sans string

			require.EventuallyWithT(t, func(ct *assert.CollectT) {
				served, verify, err := opensslServed(t.Context(), cp, caFile)
				if !assert.NoError(ct, err) {
					return
				}

				assert.Contains(ct, verify, "Verify return code: 0 (ok)")

				sans = served
				assert.Contains(ct, sans, "DNS:"+addedSAN)
			}, 90*time.Second, time.Second, cp)

			t.Logf("%s serves: %s", cp, strings.TrimSpace(sans))
			assert.NoError(t, syscall.Kill(c.Nodes[i].PID, 0), "nodepkid of %s still runs (pid %d)", cp, c.Nodes[i].PID)
		}
	})

	t.Run("rotate-ca --kubernetes under load: no failed call, the old admin kubeconfig refused", func(t *testing.T) {
		oldKubeconfig, err := os.ReadFile(kubeconfig)
		require.NoError(t, err)

		old, err := kubeconfigCreds(kubeconfig)
		require.NoError(t, err)

		before := apiServerStatuses(t, c)
		load := startAPILoad(kubeconfig, cps)

		// The load runs before and after the rotation as well: a few calls on each apiserver.
		load.waitCalls(t, 5)

		start := time.Now()
		out, err := runCLI(t, c, "-e", cps[0], "rotate-ca", "--kubernetes", "--dry-run=false",
			"--kubeconfig", kubeconfig, "--plan", filepath.Join(dir, "plan-kubernetes.yaml"))
		elapsed := time.Since(start)

		load.waitCalls(t, 5)
		load.stop()
		require.NoError(t, err, out)
		t.Logf("rotation took %s:\n%s", elapsed.Round(time.Millisecond), out)

		for i, cp := range cps {
			t.Logf("load on %s: %d calls, %d failed", cp, load.ok[i].Load(), load.failed[i].Load())
			assert.Zero(t, load.failed[i].Load(), "%s: failed calls: %v", cp, load.errs)
			assert.Positive(t, load.ok[i].Load(), cp)
		}

		t.Logf("the load used %d different kubeconfig credentials", len(load.kubeconfigs))
		assert.GreaterOrEqual(t, len(load.kubeconfigs), 2, "the load followed the kubeconfig rotate-ca kept")
		assert.Equal(t, 3, strings.Count(out, "old CA admin refused"), "rotate-ca checked every kube-apiserver refuses the old CA")
		assert.NotEqual(t, oldKubeconfig, readFile(t, kubeconfig), "the kubeconfig was kept in step")

		final, err := kubeconfigCreds(kubeconfig)
		require.NoError(t, err)

		refusedOld := old
		refusedOld.ca = final.ca

		for _, cp := range cps {
			// As it was: it no longer trusts the serving certificate.
			_, err := old.whoami(t.Context(), cp)
			require.Error(t, err, cp)

			// Trusting the new CA: kube-apiserver refuses its client certificate.
			_, err = refusedOld.whoami(t.Context(), cp)
			assert.True(t, isUnauthorized(err), "%s: old admin certificate: %v", cp, err)

			user, err := final.whoami(t.Context(), cp)
			require.NoError(t, err, cp)
			assert.Equal(t, "admin", user)
		}

		after := apiServerStatuses(t, c)
		for _, cp := range cps {
			assert.Equal(t, before[cp].Restarts, after[cp].Restarts, "%s: the Kubernetes CA rotation needs no restart", cp)
		}
	})

	t.Run("rotate-ca --aggregator: the requestheader path works before, during and after", func(t *testing.T) {
		admin, err := kubeconfigCreds(kubeconfig)
		require.NoError(t, err)

		proxyDir := func(i int) string { return filepath.Join(c.Nodes[i].StateDir, "secrets", "kubernetes") }
		proxyCreds := func(i int, d string) (creds, error) {
			crt, err := os.ReadFile(filepath.Join(d, kubepki.ProxyClientCertFile))
			if err != nil {
				return creds{}, err
			}

			key, err := os.ReadFile(filepath.Join(d, kubepki.ProxyClientKeyFile))

			return creds{ca: admin.ca, crt: crt, key: key, proxyUser: fmt.Sprintf("proxied-%d", i)}, err
		}

		// The front-proxy-client pair of the old CA, kept aside as a proxy that was not updated.
		oldPair := t.TempDir()
		for _, name := range []string{kubepki.ProxyClientCertFile, kubepki.ProxyClientKeyFile} {
			require.NoError(t, os.WriteFile(filepath.Join(oldPair, name), readFile(t, filepath.Join(proxyDir(0), name)), 0o600))
		}

		// Before: each control plane's own front-proxy-client pair goes through.
		for i, cp := range cps {
			p, err := proxyCreds(i, proxyDir(i))
			require.NoError(t, err)

			user, err := p.whoami(t.Context(), cp)
			require.NoError(t, err, cp)
			require.Equal(t, p.proxyUser, user)
		}

		// During: a proxy per control plane that re-reads its pair before each request (a pair
		// caught half-replaced is read again).
		ctx, cancel := context.WithCancel(t.Context())

		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			calls    int
			failures []string
		)

		for i, cp := range cps {
			wg.Go(func() {
				for ctx.Err() == nil {
					p, err := proxyCreds(i, proxyDir(i))
					if err == nil {
						if _, pairErr := p.httpClient(); pairErr != nil {
							_ = ctxtime.Sleep(ctx, probeInterval)

							continue
						}

						var user string

						user, err = p.whoami(ctx, cp)
						if err == nil && user != p.proxyUser {
							err = fmt.Errorf("authenticated as %q", user)
						}
					}

					if ctx.Err() != nil {
						return
					}

					mu.Lock()
					calls++

					if err != nil {
						failures = append(failures, fmt.Sprintf("%s: %v", cp, err))
					}
					mu.Unlock()

					_ = ctxtime.Sleep(ctx, probeInterval)
				}
			})
		}

		out, err := runCLI(t, c, "-e", cps[0], "rotate-ca", "--aggregator", "--dry-run=false",
			"--plan", filepath.Join(dir, "plan-aggregator.yaml"))

		cancel()
		wg.Wait()

		require.NoError(t, err, out)
		t.Logf("rotate-ca --aggregator:\n%s", out)
		t.Logf("requestheader requests during the rotation: %d, failed %d", calls, len(failures))
		assert.Empty(t, failures)
		assert.Greater(t, calls, 3)
		assert.Equal(t, 3, strings.Count(out, "requestheader (new aggregator CA) accepted, old refused"))

		// After: the reissued pairs go through; the old pair is refused everywhere.
		for i, cp := range cps {
			p, err := proxyCreds(i, proxyDir(i))
			require.NoError(t, err)

			user, err := p.whoami(t.Context(), cp)
			require.NoError(t, err, cp)
			assert.Equal(t, p.proxyUser, user)

			old, err := proxyCreds(i, oldPair)
			require.NoError(t, err)

			_, err = old.whoami(t.Context(), cp)
			assert.True(t, isUnauthorized(err), "%s: old front-proxy-client: %v", cp, err)
		}
	})

	t.Run("rotate-ca --service-account: old tokens work until retire, new ones are signed by the new key", func(t *testing.T) {
		testServiceAccountRotation(t, c, kubeconfig, filepath.Join(dir, "plan-service-account.yaml"))
	})

	t.Run("rotate-ca --etcd renews the kube-apiservers' etcd side one at a time", func(t *testing.T) {
		before := apiServerStatuses(t, c)
		probes := startReadyProber(kubeconfig, cps)

		out, err := runCLI(t, c, "-e", cps[0], "rotate-ca", "--etcd", "--dry-run=false",
			"--plan", filepath.Join(dir, "plan-etcd.yaml"))

		probes.stop()
		require.NoError(t, err, out)
		t.Logf("rotate-ca --etcd:\n%s", out)
		t.Logf("readyz rounds: %d, most not ready at once: %d (%v), not ready per apiserver: %v, longest %s",
			probes.rounds, probes.maxDown, probes.worst, probes.downs, probes.maxOutage.Round(time.Millisecond))

		assert.LessOrEqual(t, probes.maxDown, 1, "two kube-apiservers not ready at once: %v", probes.worst)

		after := apiServerStatuses(t, c)
		for _, cp := range cps {
			assert.Greater(t, after[cp].Restarts, before[cp].Restarts, "%s: restarted to load the new etcd CA bundle", cp)
			assert.True(t, after[cp].Ready, cp)
		}
	})
}

// testServiceAccountRotation creates a ServiceAccount, mints a token before the rotation and
// watches, while rotate-ca --service-account runs, that the token keeps working until the retire
// step and that tokens minted once every control plane switched carry the new key's ID; at the
// end the old token is refused and a new one works. A readiness probe checks that the
// kube-apiservers, restarted for each change of the keys, are never two down at once.
func testServiceAccountRotation(t *testing.T, c *cluster.Cluster, kubeconfig, plan string) {
	t.Helper()

	cps := c.ControlPlanes()

	admin, err := kubeconfigCreds(kubeconfig)
	require.NoError(t, err)

	cs, err := admin.clientset(cps[0])
	require.NoError(t, err)

	_, err = cs.CoreV1().ServiceAccounts("default").Create(t.Context(), &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "rotate-test"}}, metav1.CreateOptions{})
	require.NoError(t, err)

	const user = "system:serviceaccount:default:rotate-test"

	mint := func(ctx context.Context, cp string) (string, error) {
		cs, err := admin.clientset(cp)
		if err != nil {
			return "", err
		}

		expiry := int64(3600)

		tr, err := cs.CoreV1().ServiceAccounts("default").CreateToken(ctx, "rotate-test",
			&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry}}, metav1.CreateOptions{})
		if err != nil {
			return "", err
		}

		return tr.Status.Token, nil
	}

	bearer := func(token string) creds { return creds{ca: admin.ca, token: token} }

	oldToken, err := mint(t.Context(), cps[0])
	require.NoError(t, err)

	oldKeyID, err := tokenKeyID(oldToken)
	require.NoError(t, err)

	for _, cp := range cps {
		got, err := bearer(oldToken).whoami(t.Context(), cp)
		require.NoError(t, err, cp)
		require.Equal(t, user, got)
	}

	type observation struct {
		at    time.Time
		cp    string
		err   error
		keyID string
	}

	var (
		mu           sync.Mutex
		uses, minted []observation
		wg           sync.WaitGroup
	)

	ctx, cancel := context.WithCancel(t.Context())
	probes := startReadyProber(kubeconfig, cps)

	for _, cp := range cps {
		wg.Go(func() {
			for ctx.Err() == nil {
				at := time.Now()
				_, useErr := bearer(oldToken).whoami(ctx, cp)

				token, mintErr := mint(ctx, cp)
				keyID := ""

				if mintErr == nil {
					keyID, mintErr = tokenKeyID(token)
				}

				if ctx.Err() != nil {
					return
				}

				mu.Lock()
				uses = append(uses, observation{at: at, cp: cp, err: useErr})
				minted = append(minted, observation{at: at, cp: cp, err: mintErr, keyID: keyID})
				mu.Unlock()

				_ = ctxtime.Sleep(ctx, probeInterval)
			}
		})
	}

	lines, out, err := runTimed(t, c, "-e", cps[0], "rotate-ca", "--service-account", "--dry-run=false", "--plan", plan)

	cancel()
	wg.Wait()
	probes.stop()

	require.NoError(t, err, out)
	t.Logf("rotate-ca --service-account:\n%s", out)

	switched, retire := lineTime(lines, "> switch:"), lineTime(lines, "> retire:")
	require.False(t, retire.IsZero(), out)

	p, err := rotate.LoadPlan(plan)
	require.NoError(t, err)

	newKeyID, err := rotate.ServiceAccountKeyID(p.Roots.ServiceAccount.New.Key)
	require.NoError(t, err)

	planOldKeyID, err := rotate.ServiceAccountKeyID(p.Roots.ServiceAccount.Old.Key)
	require.NoError(t, err)
	require.Equal(t, planOldKeyID, oldKeyID, "the token minted before was signed by the old key")

	var okBeforeRetire, refusedBeforeRetire, unavailable, newAfterSwitch int

	for _, o := range uses {
		switch {
		case o.err == nil && o.at.Before(retire):
			okBeforeRetire++
		case isUnauthorized(o.err) && o.at.Before(retire):
			refusedBeforeRetire++
			t.Errorf("%s %s: the old token was refused before the retire step", o.at.Format("15:04:05.000"), o.cp)
		case o.err != nil && !isUnauthorized(o.err):
			unavailable++
		}
	}

	for _, o := range minted {
		if o.err != nil || !o.at.After(retire) {
			continue
		}

		// Every control plane switched, and was verified, before the retire step started.
		assert.Equal(t, newKeyID, o.keyID, "%s %s: a token minted after the switch is not signed by the new key", o.at.Format("15:04:05.000"), o.cp)
		newAfterSwitch++
	}

	t.Logf("old token: %d uses accepted before retire, %d refused before retire, %d calls to a restarting kube-apiserver; %d tokens minted after the switch (switch step started %s, retire %s)",
		okBeforeRetire, refusedBeforeRetire, unavailable, newAfterSwitch, switched.Format("15:04:05.000"), retire.Format("15:04:05.000"))
	t.Logf("readyz rounds: %d, most not ready at once: %d (%v), not ready per apiserver: %v, longest %s",
		probes.rounds, probes.maxDown, probes.worst, probes.downs, probes.maxOutage.Round(time.Millisecond))

	assert.Positive(t, okBeforeRetire)
	assert.Positive(t, newAfterSwitch)
	assert.LessOrEqual(t, probes.maxDown, 1, "two kube-apiservers not ready at once: %v", probes.worst)

	// After: the old token is refused everywhere; a new one works everywhere.
	newToken, err := mint(t.Context(), cps[0])
	require.NoError(t, err)

	for _, cp := range cps {
		_, err := bearer(oldToken).whoami(t.Context(), cp)
		assert.True(t, isUnauthorized(err), "%s: old token: %v", cp, err)

		got, err := bearer(newToken).whoami(t.Context(), cp)
		require.NoError(t, err, cp)
		assert.Equal(t, user, got)
	}
}

// opensslServed connects with openssl s_client verifying against caFile, and returns the
// subjectAltName extension of the served certificate (openssl x509 -noout -ext subjectAltName)
// and s_client's own output.
func opensslServed(ctx context.Context, cp, caFile string) (sans, verify string, err error) {
	sClient := exec.CommandContext(ctx, "openssl", "s_client", "-connect", cp+":6443", "-CAfile", caFile, "-verify_return_error")
	sClient.Stdin = strings.NewReader("")

	served, err := sClient.Output()
	if err != nil {
		return "", string(served), fmt.Errorf("openssl s_client: %w: %s", err, served)
	}

	x509 := exec.CommandContext(ctx, "openssl", "x509", "-noout", "-ext", "subjectAltName")
	x509.Stdin = bytes.NewReader(served)

	out, err := x509.CombinedOutput()
	if err != nil {
		return "", string(served), fmt.Errorf("openssl x509: %w: %s", err, out)
	}

	return string(out), string(served), nil
}
