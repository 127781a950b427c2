package rotate

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
)

// fakeKube adds kube-apiservers to the fake cluster, deciding each call by the certificates as
// the real one does: the serving certificate (the node's kube-apiserver leaf) must be trusted by
// the client's CA bundle; a client certificate must chain to the node's accepted Kubernetes CAs,
// a front-proxy one (CN front-proxy-client) to its accepted aggregator CAs. The service-account
// keys it publishes are those it read at its last start: when the node's keys or etcd CAs (the
// files it reads only at start) change, the next status read finds it stale once and restarts
// it, as the supervisor does.
type fakeKube struct {
	*fakeCluster

	servers   map[string]bool
	unhealthy map[string]bool
	// loaded is, per node, what its kube-apiserver read at start: the service-account keys, then
	// the etcd CAs (PEM).
	loaded   map[string][][]byte
	restarts map[string]int
	// drops are how many status reads of a node fail as a dropped connection.
	drops map[string]int
	// flaps are how many /readyz calls of a node fail after each restart of its kube-apiserver
	// (its etcd client reconnecting), once it answered ready a first time.
	flaps, flapping map[string]int
	readyOnce       map[string]bool
}

func newFakeKube(tc *testCluster, controlPlanes int) *fakeKube {
	k := &fakeKube{
		fakeCluster: tc.fake, servers: map[string]bool{}, unhealthy: map[string]bool{}, loaded: map[string][][]byte{},
		restarts: map[string]int{}, drops: map[string]int{}, flaps: map[string]int{}, flapping: map[string]int{}, readyOnce: map[string]bool{},
	}

	for _, name := range tc.nodes[:controlPlanes] {
		k.servers[name] = true
		k.loaded[name] = k.startupFiles(tc.fake.nodes[name])
	}

	return k
}

// serviceAccountKeys are the public keys a node's files hold (sa.pub).
func (k *fakeKube) serviceAccountKeys(n *fakeNode) [][]byte {
	rc, err := readRoot(n.cfg.Document(), RootServiceAccount)
	if err != nil {
		return nil
	}

	var out [][]byte

	for _, e := range rc.accepted {
		out = append(out, e.pem)
	}

	return append(out, rc.issuingKey)
}

// startupFiles are the service-account keys and the accepted etcd CAs of a node.
func (k *fakeKube) startupFiles(n *fakeNode) [][]byte {
	out := k.serviceAccountKeys(n)

	for _, c := range k.accepted(n)[RootEtcd].Certificates {
		out = append(out, []byte(c))
	}

	return out
}

// stale lists the control planes whose kube-apiserver has a restart pending.
func (k *fakeKube) stale() []string {
	var out []string

	for name := range k.servers {
		if !slicesEqual(k.startupFiles(k.nodes[name]), k.loaded[name]) {
			out = append(out, name)
		}
	}

	return out
}

func (k *fakeKube) KubeAPIServer(_ context.Context, node string) (*KubeAPIServer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()

	if k.drops[node] > 0 {
		k.drops[node]--

		return nil, status.Error(codes.Unavailable, "error reading from server: EOF")
	}

	if !k.servers[node] {
		return nil, nil //nolint:nilnil // the node runs no kube-apiserver
	}

	if k.unhealthy[node] {
		return &KubeAPIServer{Running: false, Detail: "failed: exit status 1"}, nil
	}

	if keys := k.startupFiles(k.nodes[node]); !slicesEqual(keys, k.loaded[node]) {
		k.loaded[node] = keys
		k.restarts[node]++
		k.flapping[node] = k.flaps[node]
		k.readyOnce[node] = false

		return &KubeAPIServer{Running: true, Current: false, Detail: "restarting"}, nil
	}

	return &KubeAPIServer{Running: true, Current: true, Detail: fmt.Sprintf("%d restarts", k.restarts[node])}, nil
}

func slicesEqual(a, b [][]byte) bool {
	return slices.EqualFunc(a, b, bytes.Equal)
}

func (k *fakeKube) Kubeconfig(_ context.Context, node string, ttl time.Duration) ([]byte, error) {
	var data []byte

	err := k.do(node, func(n *fakeNode) error {
		rc, err := readRoot(n.cfg.Document(), RootKubernetes)
		if err != nil {
			return err
		}

		ca, err := certs.LoadCA(rc.issuingCrt, rc.issuingKey)
		if err != nil {
			return err
		}

		if ttl == 0 {
			ttl = kubeconfig.AdminLifetime
		}

		data, err = kubeconfig.Issue(ca, kubeconfig.Admin("test", "https://10.0.0.1:6443", []byte(strings.Join(k.accepted(n)[RootKubernetes].Certificates, "")), ttl), time.Now())

		return err
	})

	return data, err
}

// serve is a TLS handshake with the node's kube-apiserver: it must run and be trusted.
func (k *fakeKube) serve(node string, creds KubeCredentials) (*fakeNode, error) {
	n, ok := k.nodes[node]
	if !ok || !k.servers[node] || k.unhealthy[node] {
		return nil, fmt.Errorf("dial tcp %s:6443: connect: connection refused", node)
	}

	cas, err := certs.ParseCertificates(creds.CA)
	if err != nil || !slices.ContainsFunc(cas, func(c *x509.Certificate) bool { return certs.Fingerprint(c) == n.leaves["kube-apiserver"].issuer }) {
		return nil, errors.New("tls: failed to verify certificate: x509: certificate signed by unknown authority")
	}

	return n, nil
}

func (k *fakeKube) KubeReady(_ context.Context, node string, creds KubeCredentials) error {
	k.mu.Lock()
	defer k.mu.Unlock()

	if _, err := k.serve(node, creds); err != nil {
		return err
	}

	if k.readyOnce[node] && k.flapping[node] > 0 {
		k.flapping[node]--

		return errors.New("/readyz: 500 Internal Server Error: [-]etcd failed: reason withheld")
	}

	k.readyOnce[node] = true

	return nil
}

func (k *fakeKube) KubeWhoAmI(_ context.Context, node string, creds KubeCredentials) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()

	return k.whoami(node, creds)
}

func (k *fakeKube) whoami(node string, creds KubeCredentials) (string, error) {
	n, err := k.serve(node, creds)
	if err != nil {
		return "", err
	}

	crt, err := certs.ParseCertificate(creds.Crt)
	if err != nil {
		return "", err
	}

	root, user := RootKubernetes, crt.Subject.CommonName
	if creds.ProxyUser != "" {
		root, user = RootAggregator, creds.ProxyUser

		if crt.Subject.CommonName != frontProxyCommonName {
			return "", ErrKubeUnauthorized
		}
	}

	pool := x509.NewCertPool()
	for _, c := range k.accepted(n)[root].Certificates {
		pool.AppendCertsFromPEM([]byte(c))
	}

	if _, err = crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return "", fmt.Errorf("%w: %w", ErrKubeUnauthorized, err)
	}

	return user, nil
}

func (k *fakeKube) KubeServiceAccountKeyIDs(_ context.Context, node string, creds KubeCredentials) ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()

	if _, err := k.whoami(node, creds); err != nil {
		return nil, err
	}

	var ids []string

	for _, key := range k.serviceAccountKeys(k.nodes[node]) {
		if !slices.ContainsFunc(k.loaded[node], func(l []byte) bool { return bytes.Equal(l, key) }) {
			continue
		}

		id, err := ServiceAccountKeyID(key)
		if err != nil {
			return nil, err
		}

		ids = append(ids, id)
	}

	return ids, nil
}

// execWith runs the rotation against cl with the talosconfig on disk.
func (r *run) execWith(t *testing.T, cl Cluster) (string, error) {
	t.Helper()

	cfg, err := clientconfig.Open(r.talosconfig)
	require.NoError(t, err)

	opts := r.opts
	opts.Context = cfg.Contexts["test"]

	var out bytes.Buffer

	opts.Out = &out

	err = Run(t.Context(), cl, opts)

	return out.String(), err
}

// kubeconfigCreds reads the admin credentials of this cluster's context of a kubeconfig file.
func kubeconfigCreds(path, context string) (KubeCredentials, error) {
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		return KubeCredentials{}, err
	}

	c := cfg.Contexts[context]
	if c == nil {
		return KubeCredentials{}, fmt.Errorf("no context %q", context)
	}

	return KubeCredentials{
		Name: "on disk", CA: cfg.Clusters[c.Cluster].CertificateAuthorityData,
		Crt: cfg.AuthInfos[c.AuthInfo].ClientCertificateData, Key: cfg.AuthInfos[c.AuthInfo].ClientKeyData,
	}, nil
}

// TestRunVerifiesThroughKubeAPIServers rotates every root kube-apiserver reads on 3 control planes
// that run it: each step is verified on each kube-apiserver (waiting for the restarts the
// service-account keys need), and certificates of the old CAs are refused at the end.
func TestRunVerifiesThroughKubeAPIServers(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 3, 1)
	kube := newFakeKube(cluster, 3)
	r := newRun(t, cluster, RootKubernetes, RootAggregator, RootServiceAccount)

	out, err := r.execWith(t, kube)
	require.NoError(t, err, out)
	assertConverged(t, r, r.loadPlan(t))

	assert.Equal(t, 9, strings.Count(out, "kube-apiserver ready"), "every step on every kube-apiserver:\n%s", out)
	assert.Equal(t, 3, strings.Count(out, "old CA admin refused"), out)
	assert.Equal(t, 3, strings.Count(out, "requestheader (new aggregator CA) accepted, old refused"), out)
	assert.Equal(t, 3, strings.Count(out, "service-account keys: new only"), out)
	assert.Contains(t, out, "nodepkictl --talosconfig "+r.talosconfig+" -n 10.0.0.1 kubeconfig")

	for _, cp := range cluster.nodes[:3] {
		assert.Equal(t, 3, kube.restarts[cp], "%s: restarted for each change of the service-account keys", cp)
	}
}

// TestRunCreatesKubeconfig: a --kubeconfig that does not exist is created (0600) and ends final.
func TestRunCreatesKubeconfig(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 0)
	kube := newFakeKube(cluster, 1)
	r := newRun(t, cluster, RootKubernetes)
	r.opts.KubeconfigPath = filepath.Join(r.dir, "new-kubeconfig")

	out, err := r.execWith(t, kube)
	require.NoError(t, err, out)
	assert.NotContains(t, out, "nodepkictl --talosconfig", "with --kubeconfig, no command to run")

	info, err := os.Stat(r.opts.KubeconfigPath)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	creds, err := kubeconfigCreds(r.opts.KubeconfigPath, "admin@test")
	require.NoError(t, err)
	assert.Equal(t, []byte(r.loadPlan(t).Roots.Kubernetes.New.Crt), creds.CA)

	user, err := kube.KubeWhoAmI(t.Context(), "10.0.0.1", creds)
	require.NoError(t, err)
	assert.Equal(t, "admin", user)
}

// TestRunRestartsOneKubeAPIServerAtATimeForEtcd: in an etcd rotation, every patch finds at most
// one control plane whose kube-apiserver has a restart pending (the one patched), since each is
// verified restarted before the next is patched.
func TestRunRestartsOneKubeAPIServerAtATimeForEtcd(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 3, 1)
	kube := newFakeKube(cluster, 3)
	r := newRun(t, cluster, RootEtcd)
	r.opts.KubeSettle = 50 * time.Millisecond

	for _, cp := range cluster.nodes[:3] {
		kube.flaps[cp] = 3
	}

	most, flappingAtPatch := 0, 0

	kube.afterApply = func() {
		most = max(most, len(kube.stale()))

		for _, n := range kube.flapping {
			flappingAtPatch += n
		}
	}

	out, err := r.execWith(t, kube)
	require.NoError(t, err, out)
	assertConverged(t, r, r.loadPlan(t))
	assert.Equal(t, 1, most, "kube-apiservers with a restart pending at once")
	assert.Zero(t, flappingAtPatch, "a control plane was patched while a kube-apiserver still flapped after its restart")
	assert.Equal(t, 9, strings.Count(out, "every kube-apiserver ready for 50ms"), out)
	assert.Equal(t, 3, strings.Count(out, "one control plane at a time"), out)

	for _, cp := range cluster.nodes[:3] {
		assert.Equal(t, 3, kube.restarts[cp], "%s: restarted for each change of the etcd CAs", cp)
	}
}

// TestRunKeepsKubeconfigWorkingAtEveryMoment: after every patch of any node, the kubeconfig that
// rotate-ca keeps works on every kube-apiserver; at the end it trusts the new CA only, an admin
// kubeconfig of the old CA is refused everywhere, and the file's other cluster is untouched.
func TestRunKeepsKubeconfigWorkingAtEveryMoment(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 3, 1)
	kube := newFakeKube(cluster, 3)
	r := newRun(t, cluster, RootKubernetes)

	current, err := CredentialsFromContext("current", cluster.context)
	require.NoError(t, err)
	require.NoError(t, kube.UseCredentials(t.Context(), []Credentials{current}))

	old, err := kube.Kubeconfig(t.Context(), "10.0.0.1", time.Hour)
	require.NoError(t, err)

	merged, err := kubeconfig.Merge([]byte(otherCluster), old, kubeconfig.MergeOptions{})
	require.NoError(t, err)

	path := filepath.Join(r.dir, "kubeconfig")
	require.NoError(t, os.WriteFile(path, merged.Data, 0o600))

	r.opts.KubeconfigPath = path

	oldCreds, err := kubeconfigCreds(path, "admin@test")
	require.NoError(t, err)

	var (
		mu       sync.Mutex
		failures []string
		checks   int
	)

	kube.afterApply = func() {
		mu.Lock()
		defer mu.Unlock()

		checks++

		creds, err := kubeconfigCreds(path, "admin@test")
		if err != nil {
			failures = append(failures, err.Error())

			return
		}

		for _, cp := range cluster.nodes[:3] {
			if _, err := kube.whoami(cp, creds); err != nil {
				failures = append(failures, fmt.Sprintf("after patch %d: %s: %v", checks, cp, err))
			}
		}
	}

	out, err := r.execWith(t, kube)
	require.NoError(t, err, out)
	assert.Empty(t, failures)
	assert.Greater(t, checks, 6)
	assert.Contains(t, out, "kubeconfig "+path+": transitional")
	assert.Contains(t, out, "kubeconfig "+path+": final")

	plan := r.loadPlan(t)
	final, err := kubeconfigCreds(path, "admin@test")
	require.NoError(t, err)
	assert.Equal(t, []byte(plan.Roots.Kubernetes.New.Crt), final.CA, "the final kubeconfig trusts the new CA only")

	for _, cp := range cluster.nodes[:3] {
		user, err := kube.KubeWhoAmI(t.Context(), cp, final)
		require.NoError(t, err)
		assert.Equal(t, "admin", user)

		oldCreds.CA = final.CA
		_, err = kube.KubeWhoAmI(t.Context(), cp, oldCreds)
		require.ErrorIs(t, err, ErrKubeUnauthorized, cp)
	}

	data, err := os.ReadFile(path)
	require.NoError(t, err)

	after, err := clientcmd.Load(data)
	require.NoError(t, err)

	before, err := clientcmd.Load([]byte(otherCluster))
	require.NoError(t, err)
	assert.Equal(t, before.Clusters["prod"], after.Clusters["prod"])
	assert.Equal(t, before.AuthInfos["prod-admin"], after.AuthInfos["prod-admin"])
	assert.Equal(t, "admin@test", after.CurrentContext, "the merge made it current; the rotation kept that")
}

// otherCluster is a kubeconfig of another cluster that the rotation must not touch.
const otherCluster = `apiVersion: v1
kind: Config
clusters:
- name: prod
  cluster:
    server: https://prod.example:6443
users:
- name: prod-admin
  user:
    token: prod-token
contexts:
- name: prod
  context:
    cluster: prod
    user: prod-admin
current-context: prod
`

// TestPreflightRefusesUnhealthyKubeAPIServer: a kube-apiserver that is down stops a Kubernetes
// rotation before anything changes; --force goes on without verifying through it.
func TestPreflightRefusesUnhealthyKubeAPIServer(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 3, 0)
	kube := newFakeKube(cluster, 3)
	kube.unhealthy["10.0.0.2"] = true

	r := newRun(t, cluster, RootAggregator)

	out, err := r.execWith(t, kube)
	require.Error(t, err, out)
	assert.Contains(t, out, "10.0.0.2: kube-apiserver is unhealthy: not running (failed: exit status 1)")
	assert.Contains(t, err.Error(), "rerun with --force")
	assert.Zero(t, cluster.fake.applies, "nothing may change")

	r.opts.Force = true

	out, err = r.execWith(t, kube)
	require.NoError(t, err, out)
	assert.Equal(t, 6, strings.Count(out, "kube-apiserver ready"), "verified through the two healthy kube-apiservers:\n%s", out)
}

// TestPreflightRetriesADroppedConnection: a node that drops the connection of a status read (as
// after an interrupted os rotation) is asked again, not reported.
func TestPreflightRetriesADroppedConnection(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 0)
	kube := newFakeKube(cluster, 1)
	kube.drops["10.0.0.1"] = 2

	out, err := newRun(t, cluster, RootKubernetes).execWith(t, kube)
	require.NoError(t, err, out)
	assert.NotContains(t, out, "PROBLEM")
}

// TestRunWithoutKubeAPIServers: a cluster whose control planes run no kube-apiserver is rotated
// and says that the Kubernetes side was verified through the nodes' resources only.
func TestRunWithoutKubeAPIServers(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 1)
	kube := newFakeKube(cluster, 0)
	r := newRun(t, cluster, RootKubernetes)

	out, err := r.execWith(t, kube)
	require.NoError(t, err, out)
	assert.Contains(t, out, "no control plane runs kube-apiserver")
	assert.NotContains(t, out, "kube-apiserver ready")
	assertConverged(t, r, r.loadPlan(t))
}

func TestRunDryRunSaysWhatHappensToTheKubeconfig(t *testing.T) {
	t.Parallel()

	cluster := newTestCluster(t, 1, 0)
	kube := newFakeKube(cluster, 1)
	r := newRun(t, cluster, RootKubernetes)
	r.opts.DryRun = true

	out, err := r.execWith(t, kube)
	require.NoError(t, err, out)
	assert.Contains(t, out, "pass --kubeconfig FILE to keep one in step")

	r.opts.KubeconfigPath = filepath.Join(r.dir, "kubeconfig")

	out, err = r.execWith(t, kube)
	require.NoError(t, err, out)
	assert.Contains(t, out, "would become transitional after accept and final at the end")
	assert.NoFileExists(t, r.opts.KubeconfigPath)

	require.NoError(t, os.WriteFile(r.opts.KubeconfigPath, []byte("clusters: [unclosed"), 0o600))

	_, err = r.execWith(t, kube)
	assert.ErrorContains(t, err, "is not a kubeconfig rotate-ca can keep in step")
}
