package trustd

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/resources/pki"
)

// errCertificateNotReady is what a TLS handshake gets before the trustd certificate exists.
var errCertificateNotReady = errors.New("trustd server certificate is not issued yet")

// certificateSource serves the current NodeCertificate "trustd" to each TLS handshake, so a
// renewed certificate is used by the next handshake without restarting the listener.
type certificateSource struct {
	current   atomic.Pointer[tls.Certificate]
	ready     chan struct{}
	readyOnce sync.Once
}

func newCertificateSource() *certificateSource {
	return &certificateSource{ready: make(chan struct{})}
}

// GetCertificate implements tls.Config.GetCertificate.
func (c *certificateSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	crt := c.current.Load()
	if crt == nil {
		return nil, errCertificateNotReady
	}

	return crt, nil
}

// watch follows the NodeCertificate "trustd" until ctx is done, re-subscribing after a watch error.
func (c *certificateSource) watch(ctx context.Context, st state.State, logger *zap.Logger) error {
	for ctx.Err() == nil {
		if err := c.watchOnce(ctx, st, logger); err != nil {
			return err
		}
	}

	return nil
}

// watchOnce runs one watch subscription; it returns nil when ctx is done or the watch overran.
func (c *certificateSource) watchOnce(ctx context.Context, st state.State, logger *zap.Logger) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	events := make(chan state.Event)

	if err := st.Watch(ctx, pki.NewNodeCertificate(pki.CertTrustd).Metadata(), events); err != nil {
		return fmt.Errorf("error watching the trustd certificate: %w", err)
	}

	for {
		var event state.Event

		select {
		case <-ctx.Done():
			return nil
		case event = <-events:
		}

		switch event.Type {
		case state.Created, state.Updated:
			c.load(event, logger)
		case state.Destroyed:
			// The node no longer holds a trustd certificate (it stopped being a control plane):
			// refuse handshakes rather than keep serving a certificate nobody renews.
			if c.current.Swap(nil) != nil {
				logger.Info("trustd server certificate removed")
			}
		case state.Errored:
			logger.Warn("trustd certificate watch failed, re-subscribing", zap.Error(event.Error))

			return nil
		case state.Bootstrapped, state.Noop:
		}
	}
}

func (c *certificateSource) load(event state.Event, logger *zap.Logger) {
	res, ok := event.Resource.(*pki.NodeCertificate)
	if !ok {
		logger.Error("unexpected resource in the trustd certificate watch", zap.String("type", fmt.Sprintf("%T", event.Resource)))

		return
	}

	spec := res.TypedSpec()

	if spec.Certificate == "" || spec.Key == "" {
		// Not issued yet (for example only LastError is set): keep what we have.
		return
	}

	crt, err := tls.X509KeyPair([]byte(spec.Certificate), []byte(spec.Key))
	if err != nil {
		logger.Error("trustd server certificate is unusable, keeping the previous one", zap.Error(err))

		return
	}

	c.current.Store(&crt)
	c.readyOnce.Do(func() { close(c.ready) })

	logger.Info("trustd server certificate loaded", zap.String("version", res.Metadata().Version().String()))
}
