package api

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/pki"
)

func TestRoleMatrix(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	n := startNode(t, p, nodeSpec{addr: "127.0.0.2", controlPlane: true})

	resourcesUnderTest := []struct {
		name      string
		ptr       resource.Pointer
		sensitive bool
	}{
		{"RootSecrets", pki.NewRootSecret(pki.RootOS).Metadata(), true},
		{"NodeCertificates", pki.NewNodeCertificate(pki.CertAPI).Metadata(), true},
		{"MachineConfig", config.NewMachineConfig(config.ActiveID).Metadata(), true},
		{"CertificateStatuses", pki.NewCertificateStatus(pki.CertAPI).Metadata(), false},
		{"AcceptedCAs", pki.NewAcceptedCA(pki.RootOS).Metadata(), false},
		{"ResourceDefinitions", resource.NewMetadata(meta.NamespaceName, meta.ResourceDefinitionType,
			"rootsecrets.pki.nodepki.dev", resource.VersionUndefined), false},
	}

	roles := []struct {
		role          string
		readPublic    bool
		readSensitive bool
	}{
		{role.Reader, true, false},
		{role.Operator, true, false},
		{role.Admin, true, true},
		{role.EtcdBackup, false, false},
		{"os:unknown", false, false},
	}

	for _, r := range roles {
		st := cosiState(n.dialAs(t, p, r.role))

		for _, res := range resourcesUnderTest {
			allowed := r.readPublic && (!res.sensitive || r.readSensitive)

			t.Run(fmt.Sprintf("%s/%s", r.role, res.name), func(t *testing.T) {
				ctx := callCtx(t)

				got, getErr := st.Get(ctx, res.ptr)
				list, listErr := st.List(ctx, resource.NewMetadata(res.ptr.Namespace(), res.ptr.Type(), "", resource.VersionUndefined))

				if allowed {
					require.NoError(t, getErr)
					require.NoError(t, listErr)
					assert.Equal(t, res.ptr.ID(), got.Metadata().ID())
					assert.NotEmpty(t, list.Items)

					return
				}

				for _, err := range []error{getErr, listErr} {
					require.Error(t, err)
					assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
					assert.Contains(t, err.Error(), "not authorized")
				}
			})
		}
	}
}

func TestWritesAreRefused(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	n := startNode(t, p, nodeSpec{addr: "127.0.0.2", controlPlane: true})
	ptr := pki.NewCertificateStatus(pki.CertAPI).Metadata()

	before, err := n.st.Get(t.Context(), ptr)
	require.NoError(t, err)

	for _, r := range role.All {
		t.Run(r, func(t *testing.T) {
			conn := n.dialAs(t, p, r)
			raw := v1alpha1.NewStateClient(conn)
			ctx := callCtx(t)

			forged := pki.NewCertificateStatus(pki.CertAPI)
			forged.TypedSpec().State = pki.StateExpired

			// Through the cosi adapter, as nodepkictl and talosctl call it.
			adapter := cosiState(conn)
			require.Error(t, adapter.Create(ctx, pki.NewCertificateStatus("forged")))
			require.Error(t, adapter.Update(ctx, forged))
			require.Error(t, adapter.Destroy(ctx, ptr))

			// And raw, to see the status the server sends.
			calls := map[string]func() error{
				"Destroy": func() error {
					_, err := raw.Destroy(ctx, &v1alpha1.DestroyRequest{Namespace: ptr.Namespace(), Type: ptr.Type(), Id: ptr.ID()})

					return err
				},
				"Teardown": func() error {
					_, err := raw.Teardown(ctx, &v1alpha1.TeardownRequest{Namespace: ptr.Namespace(), Type: ptr.Type(), Id: ptr.ID()})

					return err
				},
				"TeardownAndDestroy": func() error {
					_, err := raw.TeardownAndDestroy(ctx, &v1alpha1.TeardownAndDestroyRequest{Namespace: ptr.Namespace(), Type: ptr.Type(), Id: ptr.ID()})

					return err
				},
			}

			for name, call := range calls {
				err := call()
				require.Error(t, err, name)
				assert.Equal(t, codes.PermissionDenied, status.Code(err), name)
				assert.Contains(t, err.Error(), "write access is not allowed", name)
			}
		})
	}

	after, err := n.st.Get(t.Context(), ptr)
	require.NoError(t, err)
	assert.True(t, resource.Equal(before, after), "the resource changed")

	_, err = n.st.Get(t.Context(), pki.NewCertificateStatus("forged").Metadata())
	assert.True(t, state.IsNotFoundError(err), "a resource was created: %v", err)
}

func TestAccessPolicy(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	n := startNode(t, p, nodeSpec{addr: "127.0.0.2"})
	st := cosiState(n.dialAs(t, p, role.Admin))

	for _, tc := range []struct {
		name string
		ptr  resource.Pointer
		want string
	}{
		{
			"unregistered type", resource.NewMetadata(pki.NamespaceName, "Widgets.pki.nodepki.dev", "x", resource.VersionUndefined),
			`resource type "Widgets.pki.nodepki.dev" is not supported`,
		},
		{
			"unregistered namespace", resource.NewMetadata("secrets", pki.CertificateStatusesType, "x", resource.VersionUndefined),
			`namespace "secrets" is not supported`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.Get(callCtx(t), tc.ptr)
			require.Error(t, err)
			assert.Equal(t, codes.PermissionDenied, status.Code(err))
			assert.Contains(t, err.Error(), tc.want)
		})
	}

	// Discovery as talosctl does it: every resource definition, through the meta namespace.
	rds, err := safe.StateListAll[*meta.ResourceDefinition](callCtx(t), st)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, rds.Len(), 9)
}

func TestClientCertificateIsVerified(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	n := startNode(t, p, nodeSpec{addr: "127.0.0.2"})
	otherCA := newTestCA(t)

	for _, tc := range []struct {
		name string
		ca   bool // issued by the node's OS CA (else by an unrelated CA)
		spec clientCertSpec
		want string
	}{
		{"valid", true, clientCertSpec{roles: []string{role.Reader}}, ""},
		{
			"server auth only", true,
			clientCertSpec{roles: []string{role.Admin}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
			`certificate "O=os:admin" is missing the client auth extended key usage`,
		},
		{
			"server and client auth", true,
			clientCertSpec{roles: []string{role.Admin}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}},
			"missing the client auth extended key usage",
		},
		{
			"no extended key usage", true,
			clientCertSpec{roles: []string{role.Admin}, eku: []x509.ExtKeyUsage{}},
			"missing the client auth extended key usage",
		},
		{"unknown CA", false, clientCertSpec{roles: []string{role.Admin}}, "x509: certificate signed by unknown authority"},
		{
			"expired", true,
			clientCertSpec{roles: []string{role.Admin}, issuedAt: time.Now().Add(-48 * time.Hour), lifetime: 24 * time.Hour},
			"x509: certificate has expired or is not yet valid",
		},
		{
			"not yet valid", true,
			clientCertSpec{roles: []string{role.Admin}, issuedAt: time.Now().Add(48 * time.Hour)},
			"x509: certificate has expired or is not yet valid",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ca := p.osCA
			if !tc.ca {
				ca = otherCA
			}

			cert := issueClientCert(t, ca, tc.spec)
			resp, err := nodeClient(dial(t, n.endpoint, cert, p.osCA)).Version(callCtx(t), &node.VersionRequest{})

			if tc.want == "" {
				require.NoError(t, err)
				assert.Equal(t, "127.0.0.2", resp.GetNode())
				assert.Equal(t, "worker", resp.GetMachineType())

				return
			}

			require.Error(t, err)
			assert.Equal(t, codes.Unauthenticated, status.Code(err), "%v", err)
			assert.Contains(t, status.Convert(err).Message(), tc.want)
		})
	}
}

func TestRolesFromMetadataNeedImpersonator(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	n := startNode(t, p, nodeSpec{addr: "127.0.0.2"})
	ptr := pki.NewRootSecret(pki.RootOS).Metadata()

	// A reader asserting admin in the metadata stays a reader.
	reader := cosiState(n.dialAs(t, p, role.Reader))
	_, err := reader.Get(withRoleMetadata(callCtx(t), role.Admin), ptr)
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	// The impersonator certificate of a control plane carries the caller's roles.
	impersonator := cosiState(n.dialAs(t, p, role.Impersonator))
	_, err = impersonator.Get(withRoleMetadata(callCtx(t), role.Admin), ptr)
	require.NoError(t, err)

	_, err = impersonator.Get(withRoleMetadata(callCtx(t), role.Reader), ptr)
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)

	// By itself it grants nothing.
	_, err = nodeClient(n.dialAs(t, p, role.Impersonator)).Version(callCtx(t), &node.VersionRequest{})
	assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
}

// TestCARotationAtTLSLevel checks that trust and server certificate follow the state on each
// handshake and call, while the listener and established connections stay up.
func TestCARotationAtTLSLevel(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	n := startNode(t, p, nodeSpec{addr: "127.0.0.2"})
	newCA := newTestCA(t)

	oldClient := n.dialAs(t, p, role.Admin)
	watchedPtr := pki.NewCertificateStatus(pki.CertAPI).Metadata()
	events := watchOverConnection(t, oldClient, watchedPtr)

	newCert := issueClientCert(t, newCA, clientCertSpec{roles: []string{role.Reader}})

	_, err := nodeClient(dial(t, n.endpoint, newCert, p.osCA)).Version(callCtx(t), &node.VersionRequest{})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "x509: certificate signed by unknown authority")

	// Step 1: accept the new CA. A new connection with a certificate from it is accepted.
	setAcceptedCAs(t, n.st, p.osCA, newCA)

	eventually(t, func() error {
		_, err := nodeClient(dial(t, n.endpoint, newCert, p.osCA)).Version(callCtx(t), &node.VersionRequest{})

		return err
	})

	touchCertificateStatus(t, n, "after-accept")
	expectEvent(t, events, "after-accept")

	// Step 2: the server certificate is reissued by the new CA. New handshakes see it.
	oldServerCert := serverCertificate(t, oldClient)
	crt, key := issueServerCert(t, newCA, n.addr)
	updateNodeCert(t, n.st, pki.CertAPI, crt, key)

	eventually(t, func() error {
		got := serverCertificate(t, dial(t, n.endpoint, newCert, p.osCA, newCA))
		if got.Issuer.String() != newCA.Crt.Subject.String() || got.SerialNumber.Cmp(oldServerCert.SerialNumber) == 0 {
			return fmt.Errorf("%w: server still presents serial %s", errNotYet, got.SerialNumber)
		}

		return nil
	})

	// The established connection keeps its stream and keeps working.
	touchCertificateStatus(t, n, "after-reissue")
	expectEvent(t, events, "after-reissue")

	assert.Equal(t, oldServerCert.SerialNumber, serverCertificate(t, oldClient).SerialNumber, "the old connection was re-established")

	// Step 3: drop the old CA. Certificates from it are refused from the next call on, even on
	// an established connection.
	setAcceptedCAs(t, n.st, newCA)

	eventually(t, func() error {
		_, err := nodeClient(oldClient).Version(callCtx(t), &node.VersionRequest{})
		if err == nil {
			return fmt.Errorf("%w: old client still accepted", errNotYet)
		}

		if status.Code(err) != codes.Unauthenticated {
			return err
		}

		return nil
	})

	select {
	case err := <-n.serveErr:
		t.Fatalf("the server stopped during the rotation: %v", err)
	default:
	}
}

func withRoleMetadata(ctx context.Context, roles ...string) context.Context {
	for _, r := range roles {
		ctx = metadata.AppendToOutgoingContext(ctx, RoleMetadataKey, r)
	}

	return ctx
}

// serverCertificate makes a call on conn and returns the certificate the server presented.
func serverCertificate(t *testing.T, conn *grpc.ClientConn) *x509.Certificate {
	t.Helper()

	var p peer.Peer

	_, err := nodeClient(conn).Version(callCtx(t), &node.VersionRequest{}, grpc.Peer(&p))
	require.NoError(t, err)

	tlsInfo, ok := p.AuthInfo.(credentials.TLSInfo)
	require.True(t, ok)

	return tlsInfo.State.PeerCertificates[0]
}

// watchOverConnection opens a COSI watch stream on conn; it must survive everything the test does.
func watchOverConnection(t *testing.T, conn *grpc.ClientConn, ptr resource.Pointer) <-chan string {
	t.Helper()

	id := ptr.ID()

	stream, err := v1alpha1.NewStateClient(conn).Watch(t.Context(), &v1alpha1.WatchRequest{
		Namespace: ptr.Namespace(), Type: ptr.Type(), Id: &id, ApiVersion: 1,
	})
	require.NoError(t, err)

	specs := make(chan string, 16)

	go func() {
		defer close(specs)

		for {
			resp, err := stream.Recv()
			if err != nil {
				return
			}

			for _, ev := range resp.GetEvent() {
				specs <- ev.GetResource().GetSpec().GetYamlSpec()
			}
		}
	}()

	expectEvent(t, specs, "state: valid")

	return specs
}

func touchCertificateStatus(t *testing.T, n *testNode, lastError string) {
	t.Helper()

	_, err := safe.StateUpdateWithConflicts(t.Context(), n.st, pki.NewCertificateStatus(pki.CertAPI).Metadata(), func(cs *pki.CertificateStatus) error {
		cs.TypedSpec().LastError = lastError

		return nil
	})
	require.NoError(t, err)
}

func expectEvent(t *testing.T, events <-chan string, contains string) {
	t.Helper()

	timeout := time.After(10 * time.Second)

	for {
		select {
		case spec, ok := <-events:
			require.True(t, ok, "the watch stream ended while waiting for %q", contains)

			if strings.Contains(spec, contains) {
				return
			}
		case <-timeout:
			t.Fatalf("no event with %q", contains)
		}
	}
}
