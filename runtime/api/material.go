package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/resources/network"
	"github.com/nodepki/nodepki/resources/pki"
)

// rewatchDelay paces re-subscription after a watch fails (e.g. a history buffer overrun).
const rewatchDelay = 200 * time.Millisecond

// material is what the API reads from the state on every handshake and call: the server
// certificate, the forwarding client certificate, the client trust (accepted OS CAs and revoked
// credentials) and the node's addresses.
// Watchers replace each piece under the mutex; readers take the current one.
type material struct {
	logger      *zap.Logger
	nodeAddress string

	// onForwardingChange is called when the client certificate or the CA pool changes, so cached
	// forwarding connections are replaced by ones that use the new material.
	onForwardingChange func()

	ready     chan struct{}
	readyOnce sync.Once

	mu            sync.RWMutex
	serverCert    *tls.Certificate
	serverCertPEM string
	clientCert    *tls.Certificate
	clientCertPEM string
	caPool        *x509.CertPool
	caPEMs        []string
	revoked       *revocation.List
	revokedList   []revocation.Entry
	// caVersion counts the changes of the client trust (pool and revocations); caChanged is
	// closed (and replaced) at each change, so that open streams can check their caller again.
	caVersion uint64
	caChanged chan struct{}
	addresses map[string]struct{}
}

func newMaterial(logger *zap.Logger, nodeAddress netip.Addr) *material {
	m := &material{
		logger:             logger,
		ready:              make(chan struct{}),
		caPool:             x509.NewCertPool(),
		revoked:            revocation.NewList(nil),
		caChanged:          make(chan struct{}),
		onForwardingChange: func() {},
	}

	if nodeAddress.IsValid() {
		m.nodeAddress = canonicalNode(nodeAddress.String())
	}

	return m
}

// watch follows the five resources the API depends on until ctx is done.
func (m *material) watch(ctx context.Context, st state.State, wg *sync.WaitGroup) {
	watches := []struct {
		ptr   resource.Pointer
		apply func(resource.Resource)
	}{
		{pki.NewNodeCertificate(pki.CertAPI).Metadata(), m.setServerCert},
		{pki.NewNodeCertificate(pki.CertAPIClient).Metadata(), m.setClientCert},
		{pki.NewAcceptedCA(pki.RootOS).Metadata(), m.setAcceptedCAs},
		{network.NewNodeAddresses(network.CurrentID).Metadata(), m.setAddresses},
		{pki.NewRevocations(pki.RevocationsID).Metadata(), m.setRevocations},
	}

	for _, w := range watches {
		wg.Go(func() { watchResource(ctx, st, w.ptr, m.logger, w.apply) })
	}
}

// watchResource calls apply with the resource on every change (nil once it is destroyed) and
// re-subscribes when the watch fails; the first event of a new watch is the current state, so
// nothing is missed.
func watchResource(ctx context.Context, st state.State, ptr resource.Pointer, logger *zap.Logger, apply func(resource.Resource)) {
	for {
		err := watchOnce(ctx, st, ptr, apply)
		if ctx.Err() != nil {
			return
		}

		logger.Warn("watch failed, watching again", zap.String("type", ptr.Type()), zap.String("id", ptr.ID()), zap.Error(err))

		select {
		case <-ctx.Done():
			return
		case <-time.After(rewatchDelay):
		}
	}
}

func watchOnce(ctx context.Context, st state.State, ptr resource.Pointer, apply func(resource.Resource)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	events := make(chan state.Event)

	if err := st.Watch(ctx, ptr, events); err != nil {
		return fmt.Errorf("error watching %s/%s: %w", ptr.Type(), ptr.ID(), err)
	}

	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-events:
			switch ev.Type {
			case state.Created, state.Updated:
				apply(ev.Resource)
			case state.Destroyed:
				apply(nil)
			case state.Errored:
				if ev.Error == nil {
					return errors.New("watch errored")
				}

				return ev.Error
			case state.Bootstrapped, state.Noop:
			}
		}
	}
}

func nodeCertificateSpec(r resource.Resource) (*pki.NodeCertificateSpec, bool) {
	nc, ok := r.(*pki.NodeCertificate)
	if !ok {
		return nil, false
	}

	return nc.TypedSpec(), true
}

func (m *material) setServerCert(r resource.Resource) {
	spec, ok := nodeCertificateSpec(r)
	if !ok {
		// Keep serving the last certificate: refusing every handshake would help no one. Before
		// the first certificate this is just the initial "not there yet" event.
		m.mu.RLock()
		loaded := m.serverCert != nil
		m.mu.RUnlock()

		if loaded {
			m.logger.Warn("node API server certificate is gone, keeping the last one")
		}

		return
	}

	m.mu.RLock()
	same := spec.Certificate == m.serverCertPEM
	m.mu.RUnlock()

	if same {
		return
	}

	pair, err := tls.X509KeyPair([]byte(spec.Certificate), []byte(spec.Key))
	if err != nil {
		m.logger.Error("node API server certificate is unusable, keeping the last one", zap.Error(err))

		return
	}

	m.mu.Lock()
	m.serverCert, m.serverCertPEM = &pair, spec.Certificate
	m.mu.Unlock()

	m.logger.Info("node API server certificate loaded", certificateFields(pair.Leaf)...)
	m.readyOnce.Do(func() { close(m.ready) })
}

func (m *material) setClientCert(r resource.Resource) {
	var (
		pair    *tls.Certificate
		certPEM string
	)

	if spec, ok := nodeCertificateSpec(r); ok {
		p, err := tls.X509KeyPair([]byte(spec.Certificate), []byte(spec.Key))
		if err != nil {
			m.logger.Error("node API client certificate is unusable, forwarding disabled", zap.Error(err))
		} else {
			pair, certPEM = &p, spec.Certificate
		}
	}

	m.mu.Lock()
	changed := certPEM != m.clientCertPEM
	m.clientCert, m.clientCertPEM = pair, certPEM
	m.mu.Unlock()

	if !changed {
		return
	}

	if pair != nil {
		m.logger.Info("node API client certificate loaded, forwarding enabled", certificateFields(pair.Leaf)...)
	} else {
		m.logger.Info("no node API client certificate, forwarding disabled")
	}

	m.onForwardingChange()
}

func (m *material) setAcceptedCAs(r resource.Resource) {
	var pems []string

	if ca, ok := r.(*pki.AcceptedCA); ok {
		pems = ca.TypedSpec().Certificates
	}

	m.mu.RLock()
	same := slices.Equal(pems, m.caPEMs)
	m.mu.RUnlock()

	if same {
		return
	}

	pool := x509.NewCertPool()

	var fingerprints []string

	for i, p := range pems {
		parsed, err := certs.ParseCertificates([]byte(p))
		if err != nil {
			m.logger.Error("skipping an unusable accepted OS CA", zap.Int("index", i), zap.Error(err))

			continue
		}

		for _, c := range parsed {
			pool.AddCert(c)
			fingerprints = append(fingerprints, certs.Fingerprint(c))
		}
	}

	m.mu.Lock()
	m.caPool, m.caPEMs = pool, slices.Clone(pems)
	m.caVersion++
	close(m.caChanged)
	m.caChanged = make(chan struct{})
	m.mu.Unlock()

	m.logger.Info("accepted OS CAs loaded", zap.Strings("fingerprints", fingerprints))
	m.onForwardingChange()
}

// setRevocations replaces the revoked client credentials. A destroyed resource keeps the last
// list: the controller rewrites it on every config change, and forgetting a revocation on a
// transient gap would let a denied credential back in.
func (m *material) setRevocations(r resource.Resource) {
	rv, ok := r.(*pki.Revocations)
	if !ok {
		return
	}

	entries := rv.TypedSpec().Entries

	m.mu.RLock()
	same := slices.Equal(entries, m.revokedList)
	m.mu.RUnlock()

	if same {
		return
	}

	list := revocation.NewList(entries)

	m.mu.Lock()
	m.revoked, m.revokedList = list, slices.Clone(entries)
	m.caVersion++
	close(m.caChanged)
	m.caChanged = make(chan struct{})
	m.mu.Unlock()

	m.logger.Info("revoked client credentials loaded", zap.Int("entries", len(entries)))
}

func (m *material) setAddresses(r resource.Resource) {
	addresses := map[string]struct{}{}

	if na, ok := r.(*network.NodeAddresses); ok {
		for _, a := range na.TypedSpec().Addresses {
			addresses[canonicalNode(a)] = struct{}{}
		}
	}

	m.mu.Lock()
	m.addresses = addresses
	m.mu.Unlock()
}

// getServerCertificate is tls.Config.GetCertificate: each handshake gets the current certificate.
func (m *material) getServerCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()

	if m.serverCert == nil {
		return nil, errors.New("the node API certificate is not issued yet")
	}

	return m.serverCert, nil
}

// clientTrust is what a client certificate chain is verified against.
type clientTrust struct {
	pool    *x509.CertPool
	revoked *revocation.List
}

// clientTrustVersion returns the client trust and its version.
func (m *material) clientTrustVersion() (clientTrust, uint64) {
	m.mu.RLock()
	defer m.mu.RUnlock()

	return clientTrust{pool: m.caPool, revoked: m.revoked}, m.caVersion
}

// clientTrustChanged returns the current client trust, its version and a channel closed when it
// is replaced.
func (m *material) clientTrustChanged() (clientTrust, uint64, <-chan struct{}) {
	m.mu.RLock()
	defer m.mu.RUnlock()

	return clientTrust{pool: m.caPool, revoked: m.revoked}, m.caVersion, m.caChanged
}

// forwardingMaterial returns the client certificate and the CA pool for a new connection to another
// node; a nil certificate means this node does not forward.
func (m *material) forwardingMaterial() (*tls.Certificate, *x509.CertPool) {
	m.mu.RLock()
	defer m.mu.RUnlock()

	return m.clientCert, m.caPool
}

func (m *material) canForward() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()

	return m.clientCert != nil
}

// isLocal reports whether node (canonical form) names this node.
func (m *material) isLocal(node string) bool {
	if node == m.nodeAddress {
		return true
	}

	m.mu.RLock()
	defer m.mu.RUnlock()

	_, ok := m.addresses[node]

	return ok
}

// canonicalNode normalizes an address (with or without prefix length) or a host name, so that
// equal addresses compare equal as strings.
func canonicalNode(s string) string {
	s = strings.TrimSpace(s)

	if addr, err := netip.ParseAddr(s); err == nil {
		return addr.Unmap().WithZone("").String()
	}

	if prefix, err := netip.ParsePrefix(s); err == nil {
		return prefix.Addr().Unmap().WithZone("").String()
	}

	return strings.ToLower(strings.TrimSuffix(s, "."))
}

func certificateFields(c *x509.Certificate) []zap.Field {
	if c == nil {
		return nil
	}

	return []zap.Field{
		zap.String("subject", c.Subject.String()),
		zap.String("serial", c.SerialNumber.String()),
		zap.Time("not_after", c.NotAfter),
		zap.String("fingerprint", certs.Fingerprint(c)),
	}
}
