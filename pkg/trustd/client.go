package trustd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	trustdapi "github.com/nodepki/nodepki/api/trustd"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
)

// AttemptTimeout bounds one request to one endpoint, so a dead endpoint does not hold up the next.
const AttemptTimeout = 10 * time.Second

// RequestCertificate sends csrPEM to trustd with the join token and returns the CA bundle and the
// signed certificate. Endpoints (host or host:port, port 50001 by default) are tried in order
// until one answers; the server must present a certificate that chains to rootCAsPEM. The error
// names every endpoint that failed and why.
func RequestCertificate(ctx context.Context, endpoints []string, rootCAsPEM []byte, token string, csrPEM []byte, opts ...RequestOption) (caPEM, crtPEM []byte, err error) {
	var options requestOptions

	for _, opt := range opts {
		opt(&options)
	}

	if len(endpoints) == 0 {
		return nil, nil, errors.New("no trustd endpoint: set the control-plane endpoint in the machine config or pass one explicitly")
	}

	if token == "" {
		return nil, nil, errors.New("no join token: machine.token is empty")
	}

	roots, err := certs.ParseCertificates(rootCAsPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("error reading the OS CAs trustd must present: %w", err)
	}

	pool := x509.NewCertPool()
	for _, root := range roots {
		pool.AddCert(root)
	}

	var errs endpointErrors

	for _, endpoint := range endpoints {
		caPEM, crtPEM, err = requestFrom(ctx, endpoint, pool, token, csrPEM, options)
		if err == nil {
			return caPEM, crtPEM, nil
		}

		errs = append(errs, fmt.Errorf("trustd endpoint %q: %w", endpoint, err))

		if ctx.Err() != nil {
			break
		}
	}

	return nil, nil, errs
}

// endpointErrors are the failures of every endpoint tried, on one line (it ends up in LastError).
type endpointErrors []error

func (e endpointErrors) Error() string {
	messages := make([]string, 0, len(e))
	for _, err := range e {
		messages = append(messages, err.Error())
	}

	return strings.Join(messages, "; ")
}

func (e endpointErrors) Unwrap() []error {
	return e
}

// RequestOption tunes RequestCertificate.
type RequestOption func(*requestOptions)

type requestOptions struct {
	source netip.Addr
}

// FromAddress makes the request from the node's own address, so that trustd sees (and rate limits,
// and records as a cluster member) each node by its address even when several nodes share a host.
func FromAddress(addr netip.Addr) RequestOption {
	return func(o *requestOptions) { o.source = addr }
}

func requestFrom(ctx context.Context, endpoint string, roots *x509.CertPool, token string, csrPEM []byte, options requestOptions) (caPEM, crtPEM []byte, err error) {
	parsed, err := client.ParseEndpointWithPort(endpoint, DefaultPort)
	if err != nil {
		return nil, nil, err
	}

	address, host := parsed.Address(), parsed.Host

	tlsConfig := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    roots,
		ServerName: host,
	}

	dialOptions := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig)),
		grpc.WithPerRPCCredentials(tokenCredentials(token)),
	}

	if options.source.IsValid() {
		dialer := &net.Dialer{LocalAddr: &net.TCPAddr{IP: options.source.AsSlice()}}

		dialOptions = append(dialOptions, grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return dialer.DialContext(ctx, "tcp", addr)
		}))
	}

	conn, err := grpc.NewClient(address, dialOptions...)
	if err != nil {
		return nil, nil, fmt.Errorf("error creating the connection: %w", err)
	}

	defer conn.Close()

	ctx, cancel := context.WithTimeout(ctx, AttemptTimeout)
	defer cancel()

	resp, err := trustdapi.NewTrustdServiceClient(conn).Certificate(ctx, &trustdapi.CertificateRequest{Csr: csrPEM})
	if err != nil {
		return nil, nil, err
	}

	if _, err := certs.ParseCertificate(resp.GetCrt()); err != nil {
		return nil, nil, fmt.Errorf("trustd returned an unusable certificate: %w", err)
	}

	if _, err := certs.ParseCertificates(resp.GetCa()); err != nil {
		return nil, nil, fmt.Errorf("trustd returned an unusable CA bundle: %w", err)
	}

	return resp.GetCa(), resp.GetCrt(), nil
}

// tokenCredentials sends the join token as per-RPC metadata, only over a secure transport.
type tokenCredentials string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{TokenMetadataKey: string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (tokenCredentials) RequireTransportSecurity() bool {
	return true
}
