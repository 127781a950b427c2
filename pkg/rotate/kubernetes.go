package rotate

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
)

// Identities rotate-ca presents to kube-apiserver to verify a rotation.
const (
	// frontProxyCommonName is the one requestheader client name kube-apiserver allows
	// (--requestheader-allowed-names, pkg/kubernetes).
	frontProxyCommonName = "front-proxy-client"
	// proxiedUser is the user rotate-ca's requestheader requests claim through X-Remote-User.
	proxiedUser = "nodepki-rotate-ca"
	// checkClientLifetime bounds the throwaway client certificates of the checks.
	checkClientLifetime = time.Hour
)

// ErrKubeUnauthorized is a kube-apiserver's refusal of a client's credentials (HTTP 401).
var ErrKubeUnauthorized = errors.New("kube-apiserver refused the credentials (401 Unauthorized)")

// KubeAPIServer is what a control plane reports about the kube-apiserver it supervises.
type KubeAPIServer struct {
	// Running is set while the process runs.
	Running bool
	// Current is set when it runs with the files it cannot reload by itself as they are now:
	// false while a restart for changed files is pending or in progress.
	Current bool
	// Detail says more in messages: process, restarts, last error.
	Detail string
}

// KubeCredentials are what a Kubernetes API client trusts and presents (PEM).
type KubeCredentials struct {
	// Name says which credentials these are in messages.
	Name string
	CA   []byte
	Crt  []byte
	Key  []byte
	// ProxyUser, when set, is sent as X-Remote-User: Crt is a front-proxy client certificate and
	// the request is authenticated through kube-apiserver's requestheader path.
	ProxyUser string
}

// KubernetesCluster is implemented by a Cluster whose control planes may run kube-apiserver
// (NodeAPI does): the steps of a rotation that touches kube-apiserver's files are then verified
// by calls to every kube-apiserver. The calls address a control plane's own kube-apiserver
// (https://node:6443), each over a new connection.
type KubernetesCluster interface {
	// KubeAPIServer reports the kube-apiserver the node supervises; nil when it runs none.
	KubeAPIServer(ctx context.Context, node string) (*KubeAPIServer, error)
	// Kubeconfig asks the node for an admin kubeconfig (NodeService.Kubeconfig); ttl 0 takes
	// the lifetime of the node's config.
	Kubeconfig(ctx context.Context, node string, ttl time.Duration) ([]byte, error)
	// KubeReady asks the node's kube-apiserver for /readyz.
	KubeReady(ctx context.Context, node string, creds KubeCredentials) error
	// KubeWhoAmI makes a SelfSubjectReview and returns the user name the credentials
	// authenticate as; a refusal is ErrKubeUnauthorized.
	KubeWhoAmI(ctx context.Context, node string, creds KubeCredentials) (string, error)
	// KubeServiceAccountKeyIDs lists the key IDs of the service-account verification keys the
	// kube-apiserver publishes (/openid/v1/jwks).
	KubeServiceAccountKeyIDs(ctx context.Context, node string, creds KubeCredentials) ([]string, error)
}

// kubeRoots are the roots whose rotation changes files of kube-apiserver.
var kubeRoots = []Root{RootKubernetes, RootEtcd, RootAggregator, RootServiceAccount}

// kubeState is what a rotation knows of the cluster's kube-apiservers.
type kubeState struct {
	kc KubernetesCluster
	// servers are the healthy kube-apiservers found in preflight, with an admin kubeconfig of the
	// control plane they run on, for checks when the Kubernetes CA is not rotated (read-only
	// once preflight is done: the checks of the nodes run concurrently).
	servers map[string]KubeCredentials
	// clusterName and server are those of the admin kubeconfig of the cluster.
	clusterName, server string
	lifetime            time.Duration
	// transitional and final are the admin credentials of a Kubernetes CA rotation: a client
	// certificate of the new CA, trusting the old and the new CA, then the new one only.
	transitional, final *KubeCredentials
	// transitionalKubeconfig is the kubeconfig of the transitional credentials.
	transitionalKubeconfig []byte
}

// rotatesKube reports whether the rotation changes files of kube-apiserver.
func (r *rotation) rotatesKube() bool {
	return slices.ContainsFunc(kubeRoots, func(root Root) bool { return r.plan.Roots.Get(root) != nil })
}

// kubePreflight finds the control planes that run kube-apiserver and checks that each is
// healthy: a Kubernetes rotation with one that is not is refused unless --force (problems). It
// also learns the cluster name and endpoint of the admin kubeconfig.
func (r *rotation) kubePreflight(ctx context.Context) (problems []string, err error) {
	kc, _ := r.cl.(KubernetesCluster)
	if kc == nil || !r.rotatesKube() {
		return nil, nil
	}

	r.kube = &kubeState{kc: kc, servers: map[string]KubeCredentials{}}

	for _, n := range r.controlPlanes() {
		var st *KubeAPIServer

		// A node whose node API certificate or trust was just changed (a rerun after an
		// interrupted os rotation) may drop a connection: that is retried, as patches are.
		_, err := retryUnavailable(ctx, func() (string, error) {
			var err error

			st, err = kc.KubeAPIServer(ctx, n.name)

			return "", err
		})
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: cannot read the kube-apiserver status: %v", n.name, err))

			continue
		}

		if st == nil {
			continue
		}

		admin, err := r.kubeHealthy(ctx, n, st)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: kube-apiserver is unhealthy: %v (with --force, the rotation is not verified through it)", n.name, err))

			continue
		}

		r.kube.servers[n.name] = admin
	}

	if len(r.kube.servers) == 0 && len(problems) == 0 {
		r.out.printf("  no control plane runs kube-apiserver: the Kubernetes side is verified through the nodes' resources only\n")
	}

	if r.plan.Roots.Kubernetes == nil {
		return problems, nil
	}

	if err = r.learnKubeconfig(ctx); err != nil {
		return problems, err
	}

	return problems, r.kube.issueAdmin(r.plan.Roots.Kubernetes, r.opts.Now())
}

// kubeHealthy: the kube-apiserver runs with its current files and answers /readyz and a
// SelfSubjectReview with an admin kubeconfig the node issues, which it returns.
func (r *rotation) kubeHealthy(ctx context.Context, n *node, st *KubeAPIServer) (KubeCredentials, error) {
	switch {
	case !st.Running:
		return KubeCredentials{}, fmt.Errorf("not running (%s)", st.Detail)
	case !st.Current:
		return KubeCredentials{}, fmt.Errorf("a restart for changed files is pending (%s)", st.Detail)
	}

	data, err := r.kubeconfig(ctx, n.name, checkClientLifetime)
	if err != nil {
		return KubeCredentials{}, fmt.Errorf("asking for an admin kubeconfig: %w", err)
	}

	creds, _, _, err := kubeconfigCredentials("node-issued", data)
	if err != nil {
		return KubeCredentials{}, err
	}

	return creds, kubeAnswers(ctx, r.kube.kc, n.name, creds)
}

// kubeAnswers: /readyz answers ok and a SelfSubjectReview names the admin.
func kubeAnswers(ctx context.Context, kc KubernetesCluster, name string, creds KubeCredentials) error {
	if err := kc.KubeReady(ctx, name, creds); err != nil {
		return fmt.Errorf("/readyz: %w", err)
	}

	user, err := kc.KubeWhoAmI(ctx, name, creds)
	if err != nil {
		return fmt.Errorf("SelfSubjectReview with the %s admin credentials: %w", creds.Name, err)
	}

	if user != kubeconfig.AdminCommonName {
		return fmt.Errorf("SelfSubjectReview with the %s admin credentials: authenticated as %q, not %q", creds.Name, user, kubeconfig.AdminCommonName)
	}

	return nil
}

// kubeconfig asks the node for an admin kubeconfig, retrying while it is briefly unavailable.
func (r *rotation) kubeconfig(ctx context.Context, node string, ttl time.Duration) ([]byte, error) {
	var data []byte

	_, err := retryUnavailable(ctx, func() (string, error) {
		var err error

		data, err = r.kube.kc.Kubeconfig(ctx, node, ttl)

		return "", err
	})

	return data, err
}

// learnKubeconfig reads the cluster name, endpoint and admin certificate lifetime of the
// cluster's admin kubeconfig, for the transitional kubeconfig.
func (r *rotation) learnKubeconfig(ctx context.Context) error {
	cp := r.controlPlanes()[0]

	data, err := r.kubeconfig(ctx, cp.name, 0)
	if err != nil {
		return fmt.Errorf("%s: asking for an admin kubeconfig: %w", cp.name, err)
	}

	creds, clusterName, server, err := kubeconfigCredentials("current", data)
	if err != nil {
		return fmt.Errorf("%s: %w", cp.name, err)
	}

	crt, err := certs.ParseCertificate(creds.Crt)
	if err != nil {
		return fmt.Errorf("%s: the admin kubeconfig's certificate: %w", cp.name, err)
	}

	r.kube.clusterName, r.kube.server = clusterName, server
	r.kube.lifetime = crt.NotAfter.Sub(crt.NotBefore).Round(time.Hour)

	return nil
}

// issueAdmin issues the admin client certificate of the new Kubernetes CA and the credentials
// and kubeconfig that carry it.
func (k *kubeState) issueAdmin(rp *RootPlan, now time.Time) error {
	ca, err := certs.LoadCA(rp.New.Crt, rp.New.Key)
	if err != nil {
		return fmt.Errorf("plan roots.kubernetes.new: %w", err)
	}

	bundle := mergeBundles(rp.Old.Crt, rp.New.Crt)

	data, err := kubeconfig.Issue(ca, kubeconfig.Admin(k.clusterName, k.server, bundle, k.lifetime), now)
	if err != nil {
		return err
	}

	transitional, _, _, err := kubeconfigCredentials("transitional", data)
	if err != nil {
		return err
	}

	final := transitional
	final.Name, final.CA = "final", rp.New.Crt

	k.transitional, k.final, k.transitionalKubeconfig = &transitional, &final, data

	return nil
}

// kubeconfigCredentials reads the credentials, cluster name and server of a kubeconfig of one
// context with a client certificate.
func kubeconfigCredentials(name string, data []byte) (creds KubeCredentials, clusterName, server string, err error) {
	cfg, err := clientcmd.Load(data)
	if err != nil {
		return KubeCredentials{}, "", "", fmt.Errorf("the admin kubeconfig cannot be read: %w", err)
	}

	ctx := cfg.Contexts[cfg.CurrentContext]
	if ctx == nil || cfg.Clusters[ctx.Cluster] == nil || cfg.AuthInfos[ctx.AuthInfo] == nil {
		return KubeCredentials{}, "", "", errors.New("the admin kubeconfig has no complete current context")
	}

	cluster, user := cfg.Clusters[ctx.Cluster], cfg.AuthInfos[ctx.AuthInfo]

	creds = KubeCredentials{Name: name, CA: cluster.CertificateAuthorityData, Crt: user.ClientCertificateData, Key: user.ClientKeyData}

	if len(creds.CA) == 0 || len(creds.Crt) == 0 || len(creds.Key) == 0 {
		return KubeCredentials{}, "", "", errors.New("the admin kubeconfig lacks CA data or a client certificate")
	}

	return creds, ctx.Cluster, cluster.Server, nil
}

// checkKube verifies a step through a control plane's kube-apiserver, when it runs one: running
// with its current files (restarted where a file changed that it does not reload), ready, and
// for each rotated root:
//
//   - kubernetes: a SelfSubjectReview with the admin certificate of the new CA names admin,
//     trusting the old and the new CA once accepted, the new one only once switched (so the
//     reissued serving certificate is served); once retired a certificate of the old CA is refused;
//   - aggregator: a request through the requestheader path (a front-proxy-client certificate of
//     the new aggregator CA and X-Remote-User) is authenticated as that user; once retired one
//     of the old CA is refused;
//   - service-account: the published verification keys hold the new key, and the old one until
//     it is retired.
func (r *rotation) checkKube(ctx context.Context, n *node, phase Phase) (string, error) {
	if r.kube == nil {
		return "", nil
	}

	nodeAdmin, ok := r.kube.servers[n.name]
	if !ok {
		return "", nil
	}

	kc := r.kube.kc

	st, err := kc.KubeAPIServer(ctx, n.name)

	switch {
	case err != nil:
		return "", fmt.Errorf("kube-apiserver status: %w", err)
	case st == nil || !st.Running:
		return "", errors.New("kube-apiserver is not running")
	case !st.Current:
		return "", fmt.Errorf("kube-apiserver not restarted with the new files yet (%s)", st.Detail)
	}

	admin := r.kubeAdmin(nodeAdmin, phase)

	if err = kubeAnswers(ctx, kc, n.name, admin); err != nil {
		return "", fmt.Errorf("kube-apiserver: %w", err)
	}

	details := []string{fmt.Sprintf("kube-apiserver ready (%s), %s admin accepted", st.Detail, admin.Name)}

	for _, check := range []func(context.Context, *node, Phase, KubeCredentials) (string, error){
		r.checkKubeOldCA, r.checkAggregator, r.checkServiceAccount,
	} {
		detail, err := check(ctx, n, phase, admin)
		if err != nil {
			return "", fmt.Errorf("kube-apiserver: %w", err)
		}

		if detail != "" {
			details = append(details, detail)
		}
	}

	return strings.Join(details, ", "), nil
}

// rollsKubeAPIServers reports whether the group's patches must go one control plane at a time:
// an etcd rotation restarts a control plane's etcd member and then its kube-apiserver (which reads
// the etcd CA bundle only at start, and uses that member only), and a kube-apiserver whose etcd
// member just restarted can report not ready a moment after the member is back. Patched one
// control plane at a time, and each verified before the next, both restarts of a step happen on
// one control plane: one kube-apiserver is not ready at a time.
func (r *rotation) rollsKubeAPIServers(group []*node) bool {
	return r.plan.Roots.Etcd != nil && r.kube != nil && len(r.kube.servers) > 1 && group[0].controlPlane
}

// applyOneByOne patches the control planes one at a time, each verified for the step (its etcd
// member and kube-apiserver restarted and ready) before the next is patched.
func (r *rotation) applyOneByOne(ctx context.Context, group []*node, target Phase) error {
	check := map[Phase]func(context.Context, *node) (string, error){
		PhaseAccepted: r.checkAccepted, PhaseSwitched: r.checkIssued, PhaseRetired: r.checkRetired,
	}[target]

	r.out.printf("  one control plane at a time, each verified before the next: its etcd member and kube-apiserver restart\n")

	for _, n := range group {
		one := []*node{n}

		if err := r.applyGroup(ctx, one, target); err != nil {
			return err
		}

		if err := r.waitNodes(ctx, one, check); err != nil {
			return fmt.Errorf("%s: %w", target.stepName(), err)
		}

		if err := r.waitKubeSettled(ctx, target); err != nil {
			return fmt.Errorf("%s: %w", target.stepName(), err)
		}
	}

	return nil
}

// waitKubeSettled waits until every kube-apiserver answered /readyz ok on every poll for
// KubeSettle, or WaitTimeout runs out.
func (r *rotation) waitKubeSettled(ctx context.Context, target Phase) error {
	var since time.Time

	_, err := poll(ctx, r.opts.WaitTimeout, func() (string, error) {
		for name, nodeAdmin := range r.kube.servers {
			creds := nodeAdmin

			// Once every node accepts the new Kubernetes CA, the transitional credentials work
			// on every kube-apiserver, switched or not; before, the ones of the old CA do.
			if r.kube.transitional != nil && target != PhaseAccepted {
				creds = *r.kube.transitional
			}

			if err := r.kube.kc.KubeReady(ctx, name, creds); err != nil {
				since = time.Time{}

				return "", fmt.Errorf("kube-apiserver on %s: %w", name, err)
			}
		}

		if since.IsZero() {
			since = r.opts.Now()
		}

		if settled := r.opts.Now().Sub(since); settled < r.opts.KubeSettle {
			return "", fmt.Errorf("every kube-apiserver ready for %s of %s", settled.Round(time.Millisecond), r.opts.KubeSettle)
		}

		return "", nil
	})
	if err != nil {
		return fmt.Errorf("waiting for every kube-apiserver to stay ready: %w", err)
	}

	r.out.printf("  every kube-apiserver ready for %s\n", r.opts.KubeSettle)

	return nil
}

// withKube adds the check of the node's kube-apiserver to the detail of a passed check.
func (r *rotation) withKube(ctx context.Context, n *node, phase Phase, detail string, err error) (string, error) {
	if err != nil {
		return "", err
	}

	more, err := r.checkKube(ctx, n, phase)

	return joinDetails(detail, more, err)
}

// kubeAdmin is the admin credentials a step is checked with: those of the new Kubernetes CA when
// it is rotated, else the kubeconfig the node issued in preflight (the Kubernetes CA does not
// change during the run then).
func (r *rotation) kubeAdmin(nodeAdmin KubeCredentials, phase Phase) KubeCredentials {
	switch {
	case r.kube.transitional == nil:
		return nodeAdmin
	case phase == PhaseAccepted:
		return *r.kube.transitional
	default:
		return *r.kube.final
	}
}

// checkKubeOldCA: once the Kubernetes CA is retired, a client certificate of the old CA is refused.
func (r *rotation) checkKubeOldCA(ctx context.Context, n *node, phase Phase, admin KubeCredentials) (string, error) {
	rp := r.plan.Roots.Kubernetes
	if rp == nil || phase != PhaseRetired || len(rp.Old.Key) == 0 {
		return "", nil
	}

	old, err := issueClient(rp.Old, kubeconfig.AdminCommonName, []string{kubeconfig.AdminGroup}, admin.CA, r.opts.Now())
	if err != nil {
		return "", err
	}

	old.Name = "old CA"

	if err = refused(r.kube.kc.KubeWhoAmI(ctx, n.name, old)); err != nil {
		return "", fmt.Errorf("an admin certificate of the old Kubernetes CA: %w", err)
	}

	return "old CA admin refused", nil
}

// checkAggregator verifies the requestheader path with a front-proxy client of the new
// aggregator CA, and once retired that one of the old CA is refused.
func (r *rotation) checkAggregator(ctx context.Context, n *node, phase Phase, admin KubeCredentials) (string, error) {
	rp := r.plan.Roots.Aggregator
	if rp == nil {
		return "", nil
	}

	proxy, err := issueClient(rp.New, frontProxyCommonName, nil, admin.CA, r.opts.Now())
	if err != nil {
		return "", err
	}

	proxy.Name, proxy.ProxyUser = "new aggregator CA front-proxy", proxiedUser

	user, err := r.kube.kc.KubeWhoAmI(ctx, n.name, proxy)

	switch {
	case err != nil:
		return "", fmt.Errorf("requestheader request with a front-proxy-client certificate of the new aggregator CA: %w", err)
	case user != proxiedUser:
		return "", fmt.Errorf("requestheader request with a front-proxy-client certificate of the new aggregator CA: authenticated as %q, not %q", user, proxiedUser)
	}

	if phase != PhaseRetired || len(rp.Old.Key) == 0 {
		return "requestheader (new aggregator CA) accepted", nil
	}

	old, err := issueClient(rp.Old, frontProxyCommonName, nil, admin.CA, r.opts.Now())
	if err != nil {
		return "", err
	}

	old.Name, old.ProxyUser = "old aggregator CA front-proxy", proxiedUser

	if err = refused(r.kube.kc.KubeWhoAmI(ctx, n.name, old)); err != nil {
		return "", fmt.Errorf("requestheader request with a front-proxy-client certificate of the old aggregator CA: %w", err)
	}

	return "requestheader (new aggregator CA) accepted, old refused", nil
}

// checkServiceAccount compares the service-account keys kube-apiserver publishes with the plan.
func (r *rotation) checkServiceAccount(ctx context.Context, n *node, phase Phase, admin KubeCredentials) (string, error) {
	rp := r.plan.Roots.ServiceAccount
	if rp == nil {
		return "", nil
	}

	newID, err := ServiceAccountKeyID(rp.New.Key)
	if err != nil {
		return "", fmt.Errorf("plan roots.service-account.new: %w", err)
	}

	oldID, err := ServiceAccountKeyID(rp.Old.Key)
	if err != nil {
		return "", fmt.Errorf("plan roots.service-account.old: %w", err)
	}

	ids, err := r.kube.kc.KubeServiceAccountKeyIDs(ctx, n.name, admin)

	switch {
	case err != nil:
		return "", fmt.Errorf("service-account keys (/openid/v1/jwks): %w", err)
	case !slices.Contains(ids, newID):
		return "", errors.New("the new service-account key is not among the published verification keys yet (kube-apiserver reads them at start)")
	case phase < PhaseRetired && !slices.Contains(ids, oldID):
		return "", errors.New("the old service-account key is no longer published: tokens it signed are refused before the retire step")
	case phase == PhaseRetired && slices.Contains(ids, oldID):
		return "", errors.New("the old service-account key is still published (kube-apiserver reads the keys at start)")
	case phase == PhaseRetired:
		return "service-account keys: new only", nil
	default:
		return "service-account keys: old and new", nil
	}
}

// refused turns the answer to credentials that must be refused into an error when they were not.
func refused(user string, err error) error {
	switch {
	case errors.Is(err, ErrKubeUnauthorized):
		return nil
	case err != nil:
		return fmt.Errorf("checking that it is refused: %w", err)
	default:
		return fmt.Errorf("still accepted (authenticated as %q)", user)
	}
}

// issueClient issues a throwaway client certificate of a CA, trusting trust for the server.
func issueClient(ca Material, commonName string, groups []string, trust []byte, now time.Time) (KubeCredentials, error) {
	loaded, err := certs.LoadCA(ca.Crt, ca.Key)
	if err != nil {
		return KubeCredentials{}, err
	}

	crt, key, err := loaded.Issue(certs.Profile{
		CommonName:   commonName,
		Organization: groups,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		Lifetime:     checkClientLifetime,
	}, now)
	if err != nil {
		return KubeCredentials{}, fmt.Errorf("issuing a %s client certificate: %w", commonName, err)
	}

	return KubeCredentials{CA: trust, Crt: crt, Key: key}, nil
}

// ServiceAccountKeyID is the key ID kube-apiserver gives a service-account key in the tokens it
// signs and in /openid/v1/jwks: the unpadded base64url SHA-256 of the DER public key.
func ServiceAccountKeyID(keyPEM []byte) (string, error) {
	pub, err := certs.ParsePublicKey(keyPEM)
	if err != nil {
		return "", err
	}

	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encoding the public key: %w", err)
	}

	sum := sha256.Sum256(der)

	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}
