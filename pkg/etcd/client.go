package etcd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

// DialTimeout bounds connecting to a member.
const DialTimeout = 3 * time.Second

// TLSConfig is the client TLS of an etcd client: the given key pair, trusting caPEM.
func TLSConfig(caPEM, crtPEM, keyPEM []byte) (*tls.Config, error) {
	pair, err := tls.X509KeyPair(crtPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("error loading the etcd client key pair: %w", err)
	}

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("the etcd CA bundle holds no certificate")
	}

	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{pair}}, nil
}

// NewClient connects a client to the endpoints (client URLs).
func NewClient(endpoints []string, tlsConfig *tls.Config) (*clientv3.Client, error) {
	client, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		TLS:                  tlsConfig,
		DialTimeout:          DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		Logger:               zap.NewNop(),
		// gRPC's default reconnect backoff grows to two minutes: a member that restarts for a
		// trust change would be back long before its clients noticed.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: DialTimeout,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("error creating etcd client for %v: %w", endpoints, err)
	}

	return client, nil
}

// EndpointHealth is what one member says about itself.
type EndpointHealth struct {
	Endpoint string
	MemberID uint64
	Leader   uint64
	// RaftIndex is the member's raft log index; AppliedIndex how far it applied it.
	RaftIndex, AppliedIndex uint64
	IsLearner               bool
	Err                     error
}

// Healthy reports whether the member answered and knows a leader.
func (h EndpointHealth) Healthy() bool {
	return h.Err == nil && h.Leader != 0
}

// Status asks the member at endpoint for its status; an unreachable member is an EndpointHealth
// with Err set.
func Status(ctx context.Context, client *clientv3.Client, endpoint string, timeout time.Duration) EndpointHealth {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	resp, err := client.Status(ctx, endpoint)
	if err != nil {
		return EndpointHealth{Endpoint: endpoint, Err: fmt.Errorf("etcd member %s: %w", endpoint, err)}
	}

	h := EndpointHealth{
		Endpoint:     endpoint,
		MemberID:     resp.Header.GetMemberId(),
		Leader:       resp.Leader,
		RaftIndex:    resp.RaftIndex,
		AppliedIndex: resp.RaftAppliedIndex,
		IsLearner:    resp.IsLearner,
	}

	if len(resp.Errors) > 0 {
		h.Err = fmt.Errorf("etcd member %s: %v", endpoint, resp.Errors)
	}

	return h
}
