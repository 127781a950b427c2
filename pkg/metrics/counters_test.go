package metrics_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/metrics"
	"github.com/nodepki/nodepki/resources/pki"
)

// serveMetrics serves m on address until the test ends and returns a function that scrapes it.
func serveMetrics(t *testing.T, m *metrics.Metrics, address string) func() string {
	t.Helper()

	lis, err := net.Listen("tcp", address)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)

	go func() { served <- m.Serve(ctx, lis) }()

	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-served)
	})

	return func() string {
		resp, err := http.Get("http://" + lis.Addr().String() + "/metrics") //nolint:noctx // the test context bounds the test, not one scrape
		require.NoError(t, err)

		defer resp.Body.Close()

		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)

		return string(body)
	}
}

func updateStatus(t *testing.T, f fixture, id string, update func(*pki.CertificateStatusSpec)) {
	t.Helper()

	_, err := safe.StateUpdateWithConflicts(t.Context(), f.st, pki.NewCertificateStatus(id).Metadata(),
		func(r *pki.CertificateStatus) error {
			update(r.TypedSpec())

			return nil
		})
	require.NoError(t, err)
}

// TestObserveCertificates: the leaves present when observing starts are not counted; a first
// serial is an issuance, a new serial a renewal, a new lastError a failure of one or the other.
func TestObserveCertificates(t *testing.T) {
	t.Parallel()

	f := newFixture(t)
	updateStatus(t, f, pki.CertAPI, func(s *pki.CertificateStatusSpec) { s.Serial = "a1" })

	m, err := metrics.New(f.st, metrics.NewCounters())
	require.NoError(t, err)

	observe, err := m.ObserveCertificates(t.Context())
	require.NoError(t, err)

	observed := make(chan error, 1)

	go func() { observed <- observe() }()

	scrape := serveMetrics(t, m, "127.0.140.10:0")

	// Renewal of api: new serial; the same error twice is one failure; a new error another.
	updateStatus(t, f, pki.CertAPI, func(s *pki.CertificateStatusSpec) { s.Serial = "a2" })
	updateStatus(t, f, pki.CertAPI, func(s *pki.CertificateStatusSpec) { s.LastError = "CA not loaded" })
	updateStatus(t, f, pki.CertAPI, func(s *pki.CertificateStatusSpec) { s.State = pki.StateRenewing })
	updateStatus(t, f, pki.CertAPI, func(s *pki.CertificateStatusSpec) { s.LastError = "trustd refused" })

	// etcd-peer fails to issue, then is issued; a new leaf that comes with a serial is issued too.
	updateStatus(t, f, "etcd-peer", func(s *pki.CertificateStatusSpec) { s.LastError = "no etcd CA" })
	updateStatus(t, f, "etcd-peer", func(s *pki.CertificateStatusSpec) { s.Serial = "e1"; s.LastError = "" })

	trustd := pki.NewCertificateStatus("trustd")
	trustd.TypedSpec().Root = pki.RootOS
	trustd.TypedSpec().Serial = "t1"
	require.NoError(t, f.st.Create(t.Context(), trustd))

	want := []string{
		`nodepki_certificate_renewals_total{id="api",root="os"} 1`,
		`nodepki_certificate_renewal_failures_total{id="api",root="os"} 2`,
		`nodepki_certificate_issuance_failures_total{id="etcd-peer",root="etcd"} 1`,
		`nodepki_certificate_issuances_total{id="etcd-peer",root="etcd"} 1`,
		`nodepki_certificate_issuances_total{id="trustd",root="os"} 1`,
	}

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		body := scrape()

		for _, line := range want {
			assert.Contains(c, body, line+"\n")
		}
	}, 10*time.Second, 20*time.Millisecond)

	body := scrape()
	assert.NotContains(t, body, `nodepki_certificate_issuances_total{id="api"`, "api existed before observing: baseline")
	assert.Equal(t, 5, strings.Count(body, "nodepki_certificate_")-strings.Count(body, "nodepki_certificate_not_after")-
		strings.Count(body, "nodepki_certificate_renew_at")-strings.Count(body, "nodepki_certificate_trusted")-
		2*4, // HELP and TYPE of the four counters
		"only the wanted counter series:\n%s", body)

	select {
	case err = <-observed:
		t.Fatalf("observing stopped early: %v", err)
	default:
	}
}

// nodeServiceServer answers Version and refuses ApplyConfiguration, as a real node API would for
// a bad config.
type nodeServiceServer struct {
	nodeapi.UnimplementedNodeServiceServer
}

func (nodeServiceServer) Version(context.Context, *nodeapi.VersionRequest) (*nodeapi.VersionResponse, error) {
	return &nodeapi.VersionResponse{}, nil
}

func (nodeServiceServer) ApplyConfiguration(_ context.Context, req *nodeapi.ApplyConfigurationRequest) (*nodeapi.ApplyConfigurationResponse, error) {
	if len(req.GetPatches()) > 0 && string(req.GetPatches()[0]) == "bad" {
		return nil, status.Error(codes.InvalidArgument, "bad patch")
	}

	return &nodeapi.ApplyConfigurationResponse{Changed: string(req.GetData()) != "same"}, nil
}

// TestInterceptors: calls through real gRPC servers are counted by method and code (a method no
// service defines as "unknown"), config applies by source, trustd requests by result.
func TestInterceptors(t *testing.T) {
	t.Parallel()

	f := newFixture(t)

	counters := metrics.NewCounters()

	m, err := metrics.New(f.st, counters)
	require.NoError(t, err)

	scrape := serveMetrics(t, m, "127.0.140.11:0")

	lis, err := net.Listen("tcp", "127.0.140.12:0")
	require.NoError(t, err)

	srv := grpc.NewServer(
		grpc.StreamInterceptor(counters.APIStreamInterceptor()),
		grpc.ChainUnaryInterceptor(counters.TrustdUnaryInterceptor(), counters.ConfigApplyInterceptor()),
	)
	nodeapi.RegisterNodeServiceServer(srv, nodeServiceServer{})

	go srv.Serve(lis) //nolint:errcheck // ends with Stop

	t.Cleanup(srv.Stop)

	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)

	t.Cleanup(func() { require.NoError(t, conn.Close()) })

	client := nodeapi.NewNodeServiceClient(conn)

	for _, req := range []*nodeapi.ApplyConfigurationRequest{
		{Data: []byte("machine: {}")},
		{Data: []byte("same")},
		{Data: []byte("machine: {}"), DryRun: true},
		{Patches: [][]byte{[]byte("good")}},
		{Patches: [][]byte{[]byte("good")}},
	} {
		_, err = client.ApplyConfiguration(t.Context(), req)
		require.NoError(t, err)
	}

	_, err = client.ApplyConfiguration(t.Context(), &nodeapi.ApplyConfigurationRequest{Patches: [][]byte{[]byte("bad")}})
	require.Equal(t, codes.InvalidArgument, status.Code(err))

	// The node API's public server is a proxy: every call reaches its unknown-service handler.
	proxyLis, err := net.Listen("tcp", "127.0.140.13:0")
	require.NoError(t, err)

	proxy := grpc.NewServer(
		grpc.StreamInterceptor(counters.APIStreamInterceptor()),
		grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
			if method, _ := grpc.MethodFromServerStream(stream); method != nodeapi.NodeService_Version_FullMethodName {
				return status.Error(codes.PermissionDenied, "not allowed")
			}

			return stream.SendMsg(&nodeapi.VersionResponse{})
		}),
	)

	go proxy.Serve(proxyLis) //nolint:errcheck // ends with Stop

	t.Cleanup(proxy.Stop)

	proxyConn, err := grpc.NewClient("passthrough:///"+proxyLis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)

	t.Cleanup(func() { require.NoError(t, proxyConn.Close()) })

	for range 2 {
		_, err = nodeapi.NewNodeServiceClient(proxyConn).Version(t.Context(), &nodeapi.VersionRequest{})
		require.NoError(t, err)
	}

	// A path that names no method, with a secret-looking name: the label is "unknown".
	err = proxyConn.Invoke(t.Context(), "/no.Such/Method-s3cr3t", &emptypb.Empty{}, &emptypb.Empty{})
	require.Equal(t, codes.PermissionDenied, status.Code(err))

	err = proxyConn.Invoke(t.Context(), nodeapi.NodeService_ApplyConfiguration_FullMethodName, &emptypb.Empty{}, &emptypb.Empty{})
	require.Equal(t, codes.PermissionDenied, status.Code(err))

	counters.ConfigApplied(metrics.SourceBoot)

	body := scrape()

	for _, line := range []string{
		`nodepki_config_applies_total{source="apply"} 1`,
		`nodepki_config_applies_total{source="patch"} 2`,
		`nodepki_config_applies_total{source="boot"} 1`,
		`nodepki_trustd_requests_total{result="OK"} 5`,
		`nodepki_trustd_requests_total{result="InvalidArgument"} 1`,
		`nodepki_api_requests_total{code="OK",method="/nodepki.node.v1.NodeService/Version"} 2`,
		`nodepki_api_requests_total{code="PermissionDenied",method="unknown"} 1`,
		`nodepki_api_requests_total{code="PermissionDenied",method="/nodepki.node.v1.NodeService/ApplyConfiguration"} 1`,
	} {
		assert.Contains(t, body, line+"\n")
	}

	assert.NotContains(t, body, "s3cr3t")
}
