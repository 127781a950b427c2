package rotate

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
	"github.com/nodepki/nodepki/resources/pki"
)

// fakeCluster simulates what the rotation observes of real nodes: configs patched with the real
// machineconfig code, AcceptedCAs derived from them, leaves reissued when the issuing root
// changes (a worker's node API certificate comes from the entry control plane's issuing CA, as
// from trustd), and mutual TLS decided by the certificates: a client certificate must chain to
// the node's accepted OS CAs, the node's certificate must be trusted by the client's CA bundle,
// and a forwarded call needs the same between the entry node and the target.
type fakeCluster struct {
	mu    sync.Mutex
	nodes map[string]*fakeNode
	entry string
	creds []Credentials

	applies int
	// crashAt makes the crashAt-th ApplyPatches call fail as if the command died there; with
	// landBeforeCrash the patch is applied first (the response is what got lost).
	crashAt         int
	landBeforeCrash bool
	// unreachable nodes fail every call.
	unreachable map[string]bool
	// clockOffset shifts a node's clock.
	clockOffset map[string]time.Duration
	// expired marks a leaf of a node as expired until it is reissued by another CA.
	expired map[string]string
	// initialOS is the OS CA the cluster was created with.
	initialOS string
	// afterApply, when set, runs after every applied patch (under the cluster's lock).
	afterApply func()
	// members is what Members answers on each node; a node without an entry records none (an
	// older version).
	members map[string][]Member
	// membersCalls counts the Members calls.
	membersCalls int
	// sent is every patch sent to each node, applied or not.
	sent map[string][][]byte
	// trustdProbes counts the TrustdProbe calls.
	trustdProbes int
}

var errCrash = errors.New("simulated crash")

type fakeNode struct {
	name string
	cfg  *machineconfig.Config
	// leaves maps certificate ID to root and issuer fingerprint.
	leaves map[string]fakeLeaf
}

type fakeLeaf struct {
	root   Root
	issuer string
}

// testCluster is a generated cluster: its bundle and the fake nodes.
type testCluster struct {
	bundle *bundle.Bundle
	fake   *fakeCluster
	nodes  []string
	// talosconfig is the admin client context of the old OS CA.
	context *clientconfig.Context
}

// newTestCluster builds a cluster of controlPlanes + workers nodes named 10.0.0.1, 10.0.0.2, ...
func newTestCluster(t testing.TB, controlPlanes, workers int) *testCluster {
	t.Helper()

	b, err := bundle.Generate()
	require.NoError(t, err)

	cp, worker, err := generate.Generate(generate.Input{ClusterName: "test", Endpoint: "https://10.0.0.1:6443", Bundle: b})
	require.NoError(t, err)

	fc := &fakeCluster{
		nodes: map[string]*fakeNode{}, unreachable: map[string]bool{},
		clockOffset: map[string]time.Duration{}, expired: map[string]string{}, members: map[string][]Member{},
	}

	tc := &testCluster{bundle: b, fake: fc}

	for i := range controlPlanes + workers {
		name := fmt.Sprintf("10.0.0.%d", i+1)
		cfg := cp

		if i >= controlPlanes {
			cfg = worker
		}

		if i == 0 {
			fc.entry = name
		}

		fc.nodes[name] = &fakeNode{name: name, cfg: cfg, leaves: map[string]fakeLeaf{}}
		tc.nodes = append(tc.nodes, name)
	}

	for _, name := range tc.nodes {
		fc.reissue(fc.nodes[name])
	}

	fc.initialOS = fc.nodes[fc.entry].leaves["api"].issuer

	// Each control plane knows itself and the workers it signed for (here: all of them).
	now := time.Now()

	for _, cp := range tc.nodes[:controlPlanes] {
		fc.members[cp] = append(fc.members[cp], Member{Address: cp, Hostname: "host-" + cp, MachineType: machineconfig.TypeControlPlane, LastSeen: now})

		for _, w := range tc.nodes[controlPlanes:] {
			fc.members[cp] = append(fc.members[cp], Member{Address: w, Hostname: "host-" + w, MachineType: machineconfig.TypeWorker, LastSeen: now})
		}
	}

	crt, key, err := b.NewClientCertificate([]string{adminRole}, time.Hour)
	require.NoError(t, err)

	tc.context = clientconfig.New("test", []string{tc.nodes[0]}, b.Certs.OS.Crt, crt, key).Contexts["test"]
	tc.context.Nodes = tc.nodes

	return tc
}

// reissue brings a node's leaves in line with its config, as its controllers would.
func (f *fakeCluster) reissue(n *fakeNode) {
	doc := n.cfg.Document()

	leafRoots := map[string]Root{
		"api": RootOS, "api-client": RootOS, "trustd": RootOS,
		"kube-apiserver": RootKubernetes, "etcd-server": RootEtcd, "front-proxy-client": RootAggregator,
	}

	for id, root := range leafRoots {
		rc, err := readRoot(doc, root)
		if err != nil || !rc.present {
			continue
		}

		if n.cfg.IsControlPlane() {
			n.leaves[id] = fakeLeaf{root: root, issuer: rc.issuingFingerprint}

			continue
		}

		if id != "api" {
			continue
		}

		// A worker asks trustd again when its issuing CA changed; trustd signs with the entry
		// control plane's issuing CA at that moment.
		if prev, ok := n.leaves[id]; ok && prev.issuer == rc.issuingFingerprint {
			continue
		}

		entry, _ := readRoot(f.nodes[f.entry].cfg.Document(), RootOS)
		n.leaves[id] = fakeLeaf{root: root, issuer: entry.issuingFingerprint}
	}
}

func (f *fakeCluster) node(name string) (*fakeNode, error) {
	if f.unreachable[name] {
		return nil, status.Errorf(codes.Unavailable, "node %s is unreachable", name)
	}

	n, ok := f.nodes[name]
	if !ok {
		return nil, status.Errorf(codes.Unavailable, "no such node %s", name)
	}

	return n, nil
}

// accepted is the node's AcceptedCAs, as the controller derives it.
func (f *fakeCluster) accepted(n *fakeNode) map[Root]pki.AcceptedCASpec {
	out := map[Root]pki.AcceptedCASpec{}

	for _, root := range AllRoots {
		if root == RootJoinToken {
			continue // not a CA: nodes report no AcceptedCAs for it
		}

		rc, err := readRoot(n.cfg.Document(), root)
		if err != nil || (!rc.present && len(rc.accepted) == 0) {
			continue
		}

		var spec pki.AcceptedCASpec

		for _, e := range rc.accepted {
			for _, fp := range e.fingerprints {
				if fp != rc.issuingFingerprint && !slices.Contains(spec.Fingerprints, fp) {
					spec.Fingerprints = append(spec.Fingerprints, fp)
					spec.Certificates = append(spec.Certificates, string(e.pem))
				}
			}
		}

		if rc.present {
			spec.Fingerprints = append(spec.Fingerprints, rc.issuingFingerprint)
			spec.Certificates = append(spec.Certificates, string(rc.issuingCrt))
			spec.IssuingFingerprint = rc.issuingFingerprint
		}

		out[root] = spec
	}

	return out
}

// acceptsClient reports whether the node accepts a client certificate (PEM).
func (f *fakeCluster) acceptsClient(n *fakeNode, crtPEM []byte) bool {
	crt, err := certs.ParseCertificate(crtPEM)
	if err != nil {
		return false
	}

	pool := x509.NewCertPool()

	for _, c := range f.accepted(n)[RootOS].Certificates {
		if parsed, err := certs.ParseCertificates([]byte(c)); err == nil {
			for _, p := range parsed {
				pool.AddCert(p)
			}
		}
	}

	_, err = crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})

	return err == nil
}

// trusts reports whether a CA bundle (PEM) trusts the node's API certificate.
func trusts(caPEM []byte, n *fakeNode) bool {
	cas, err := certs.ParseCertificates(caPEM)
	if err != nil {
		return false
	}

	return slices.ContainsFunc(cas, func(c *x509.Certificate) bool { return certs.Fingerprint(c) == n.leaves["api"].issuer })
}

// call authenticates a call with creds to target through entry (direct when they are the same).
func (f *fakeCluster) call(creds Credentials, entryName, target string) (*fakeNode, error) {
	entry, err := f.node(entryName)
	if err != nil {
		return nil, err
	}

	if !trusts(creds.CA, entry) {
		return nil, status.Errorf(codes.Unavailable, "x509: %s: certificate signed by unknown authority", entryName)
	}

	if !f.acceptsClient(entry, creds.Crt) {
		return nil, status.Errorf(codes.Unauthenticated, "x509: %s: client certificate signed by unknown authority", entryName)
	}

	if target == entryName {
		return entry, nil
	}

	n, err := f.node(target)
	if err != nil {
		return nil, err
	}

	// The entry node forwards with its api-client certificate and verifies the target against
	// its own accepted OS CAs.
	if !slices.Contains(f.accepted(entry)[RootOS].Fingerprints, n.leaves["api"].issuer) ||
		!slices.Contains(f.accepted(n)[RootOS].Fingerprints, entry.leaves["api-client"].issuer) {
		return nil, status.Errorf(codes.Unavailable, "forwarding from %s to %s failed", entryName, target)
	}

	return n, nil
}

// do runs fn on target with the first credentials the entry accepts, as NodeAPI does.
func (f *fakeCluster) do(target string, fn func(n *fakeNode) error) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	var errs []error

	for _, c := range f.creds {
		n, err := f.call(c, f.entry, target)
		if err == nil {
			return fn(n)
		}

		if status.Code(err) != codes.Unauthenticated {
			return err
		}

		errs = append(errs, err)
	}

	if len(errs) == 0 {
		return errors.New("no credentials")
	}

	return errors.Join(errs...)
}

func (f *fakeCluster) UseCredentials(_ context.Context, creds []Credentials) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.creds = slices.Clone(creds)

	return nil
}

func (f *fakeCluster) Version(_ context.Context, node string) (NodeVersion, error) {
	var v NodeVersion

	err := f.do(node, func(n *fakeNode) error {
		now := time.Now()
		v = NodeVersion{MachineType: n.cfg.Document().Machine.Type, Clock: now.Add(f.clockOffset[node]), Local: now, RoundTrip: time.Millisecond}

		return nil
	})

	return v, err
}

func (f *fakeCluster) MachineConfig(_ context.Context, node string) ([]byte, error) {
	var raw []byte

	err := f.do(node, func(n *fakeNode) error {
		var err error

		raw, err = n.cfg.Bytes()

		return err
	})

	return raw, err
}

func (f *fakeCluster) ApplyPatches(_ context.Context, node string, patches [][]byte) error {
	return f.do(node, func(n *fakeNode) error {
		if f.sent == nil {
			f.sent = map[string][][]byte{}
		}

		f.sent[node] = append(f.sent[node], patches...)
		f.applies++
		crash := f.crashAt > 0 && f.applies == f.crashAt

		if crash && !f.landBeforeCrash {
			return errCrash
		}

		loaded := make([]machineconfig.Patch, 0, len(patches))

		for _, p := range patches {
			lp, err := machineconfig.LoadPatch(p)
			if err != nil {
				return status.Error(codes.InvalidArgument, err.Error())
			}

			loaded = append(loaded, lp)
		}

		next, err := machineconfig.Apply(n.cfg, loaded...)
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}

		if err = next.Validate(); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}

		n.cfg = next
		f.reissue(n)

		if f.afterApply != nil {
			f.afterApply()
		}

		if crash {
			return errCrash
		}

		return nil
	})
}

func (f *fakeCluster) AcceptedCAs(_ context.Context, node string) (map[Root]pki.AcceptedCASpec, error) {
	var out map[Root]pki.AcceptedCASpec

	err := f.do(node, func(n *fakeNode) error {
		out = f.accepted(n)

		return nil
	})

	return out, err
}

func (f *fakeCluster) CertificateStatuses(_ context.Context, node string) (map[string]pki.CertificateStatusSpec, error) {
	out := map[string]pki.CertificateStatusSpec{}

	err := f.do(node, func(n *fakeNode) error {
		accepted := f.accepted(n)

		for id, leaf := range n.leaves {
			s := pki.CertificateStatusSpec{Root: string(leaf.root), IssuerFingerprint: leaf.issuer, State: pki.StateValid}
			s.Trusted = slices.Contains(accepted[leaf.root].Fingerprints, leaf.issuer)

			if !s.Trusted {
				s.State = pki.StateUntrusted
			}

			if f.expired[node] == id && leaf.issuer == f.initialOS {
				s.State = pki.StateExpired
			}

			out[id] = s
		}

		return nil
	})

	return out, err
}

func (f *fakeCluster) Probe(_ context.Context, node string, creds Credentials, direct bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	entry := f.entry
	if direct {
		entry = node
	}

	_, err := f.call(creds, entry, node)

	return err
}

func (f *fakeCluster) Members(_ context.Context, endpoint string) ([]Member, error) {
	var out []Member

	err := f.do(endpoint, func(n *fakeNode) error {
		f.membersCalls++
		out = slices.Clone(f.members[n.name])

		return nil
	})

	return out, err
}

// configOf returns a node's current config.
func (f *fakeCluster) configOf(name string) *machineconfig.Config {
	f.mu.Lock()
	defer f.mu.Unlock()

	return f.nodes[name].cfg
}

// TrustdProbe simulates trustd on a control plane: its certificate (the trustd leaf) must be
// trusted by rootsPEM, and the token must be the node's machine.token or in machine.acceptedTokens.
func (f *fakeCluster) TrustdProbe(_ context.Context, node string, rootsPEM []byte, token string) error {
	f.mu.Lock()
	defer f.mu.Unlock()

	f.trustdProbes++

	n, err := f.node(node)
	if err != nil {
		return err
	}

	leaf, ok := n.leaves["trustd"]
	if !ok {
		return status.Errorf(codes.Unavailable, "%s runs no trustd", node)
	}

	cas, err := certs.ParseCertificates(rootsPEM)
	if err != nil || !slices.ContainsFunc(cas, func(c *x509.Certificate) bool { return certs.Fingerprint(c) == leaf.issuer }) {
		return status.Errorf(codes.Unavailable, "x509: %s: trustd certificate signed by unknown authority", node)
	}

	machine := n.cfg.Document().Machine
	if token == "" || (token != machine.Token && !slices.Contains(machine.AcceptedTokens, token)) {
		return status.Error(codes.Unauthenticated, "invalid join token")
	}

	return nil
}
