package api

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/pkg/role"
)

func openAudit(t *testing.T, addr string) *audit.Log {
	t.Helper()

	l, err := audit.Open(audit.Options{Dir: t.TempDir(), Node: addr})
	require.NoError(t, err)

	t.Cleanup(func() { l.Close() })

	return l
}

// readAudit reads a node's audit log through the API, as admin.
func readAudit(t *testing.T, client node.NodeServiceClient, target string) []audit.Event {
	t.Helper()

	ctx := callCtx(t)
	if target != "" {
		ctx = toNode(ctx, target)
	}

	stream, err := client.Audit(ctx, &node.AuditRequest{})
	require.NoError(t, err)

	var events []audit.Event

	for {
		line, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return events
		}

		require.NoError(t, err)
		require.Empty(t, line.GetWarning())

		e, err := audit.ParseLine(line.GetLine())
		require.NoError(t, err)

		events = append(events, e)
	}
}

func eventsOf(events []audit.Event, typ string) []audit.Event {
	var out []audit.Event

	for _, e := range events {
		if e.Type == typ {
			out = append(out, e)
		}
	}

	return out
}

// TestAuditNamesTheVerifiedCaller: the caller of an audited call is taken from its verified
// certificate, never from metadata it sends (a client asserting another subject is recorded as
// itself), a forwarded call names the forwarding control plane too, and the audit log is read
// by os:admin only, through the forwarding control plane as well; a refused read is recorded.
func TestAuditNamesTheVerifiedCaller(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	lisA, lisB := listenPairOn(t, "127.0.130.2", "127.0.130.3")
	logA, logB := openAudit(t, "127.0.130.2"), openAudit(t, "127.0.130.3")
	a := startNode(t, p, nodeSpec{addr: "127.0.130.2", controlPlane: true, lis: lisA, audit: logA})
	startNode(t, p, nodeSpec{addr: "127.0.130.3", lis: lisB, audit: logB})
	addMember(t, a.st, "127.0.130.3")

	adminCert := issueClientCert(t, p.osCA, clientCertSpec{roles: []string{role.Admin}})
	leaf, err := x509.ParseCertificate(adminCert.Certificate[0])
	require.NoError(t, err)

	admin := nodeClient(dial(t, a.endpoint, adminCert, p.osCA))

	spoofed := metadata.Pairs(
		callerSubjectKey, "CN=someone-else,O=os:admin",
		callerSerialKey, "01",
		callerAddressKey, "192.0.2.1:1",
		forwardedByKey, "CN=nobody",
	)
	patch := &node.ApplyConfigurationRequest{Patches: [][]byte{[]byte(`{"machine": {"certSANs": ["audit.example.com"]}}`)}}

	_, err = admin.ApplyConfiguration(metadata.NewOutgoingContext(callCtx(t), spoofed), patch)
	require.NoError(t, err)

	_, err = admin.ApplyConfiguration(toNode(metadata.NewOutgoingContext(callCtx(t), spoofed), "127.0.130.3"), patch)
	require.NoError(t, err)

	want := audit.Caller{Subject: leaf.Subject.String(), Serial: revocation.FormatSerial(leaf.SerialNumber), Roles: []string{role.Admin}}

	for _, tc := range []struct {
		target      string
		forwardedBy string
	}{
		{"", ""},
		{"127.0.130.3", impersonatorSubject(t, a)},
	} {
		patched := eventsOf(readAudit(t, admin, tc.target), audit.TypeConfigPatched)
		require.Len(t, patched, 1, "node %q", tc.target)

		got := *patched[0].Caller
		assert.Contains(t, got.Address, "127.0.0.1:", "the address the caller connected from")
		got.Address = ""
		want.ForwardedBy = tc.forwardedBy
		assert.Equal(t, want, got, "node %q", tc.target)
		assert.Equal(t, []string{"machine.certSANs"}, patched[0].Changed)
	}

	for _, r := range []string{role.Reader, role.Operator} {
		reader := nodeClient(a.dialAs(t, p, r))

		for _, target := range []string{"", "127.0.130.3"} {
			ctx := callCtx(t)
			if target != "" {
				ctx = toNode(ctx, target)
			}

			stream, err := reader.Audit(ctx, &node.AuditRequest{})
			if err == nil {
				_, err = stream.Recv()
			}

			require.Error(t, err)
			assert.Equal(t, codes.PermissionDenied, status.Code(err))
			assert.Contains(t, err.Error(), "Audit needs role os:admin; the caller's roles: "+r)
		}
	}

	refused := eventsOf(readAudit(t, admin, ""), audit.TypeRefused)
	require.NotEmpty(t, refused)
	assert.Equal(t, audit.ServiceAPI, refused[0].Refusal.Service)
	assert.Equal(t, "127.0.0.1", refused[0].Refusal.Peer)
	assert.Equal(t, node.NodeService_Audit_FullMethodName, refused[0].Refusal.Method)
}

// impersonatorSubject is the subject of the forwarding client certificate of a control plane.
func impersonatorSubject(t *testing.T, n *testNode) string {
	t.Helper()

	cert, _ := n.server.material.forwardingMaterial()
	require.NotNil(t, cert)

	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)

	return leaf.Subject.String()
}

// TestAuditIssuedCredentials: client configurations, renewals and kubeconfigs are recorded with
// the caller and the issued certificate's subject, serial, fingerprints and lifetime, and without
// any PEM.
func TestAuditIssuedCredentials(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	log := openAudit(t, "127.0.130.4")
	cp := startNode(t, p, nodeSpec{addr: "127.0.130.4", controlPlane: true, audit: log})
	admin := nodeClient(cp.dialAs(t, p, role.Admin))

	issued, err := admin.GenerateClientConfiguration(callCtx(t), &node.GenerateClientConfigurationRequest{Roles: []string{role.Reader}, CrtTtlSeconds: 3600})
	require.NoError(t, err)

	readerCert, err := tls.X509KeyPair(issued.GetCrt(), issued.GetKey())
	require.NoError(t, err)

	key, ok := readerCert.PrivateKey.(crypto.Signer)
	require.True(t, ok)

	renewed, err := nodeClient(dial(t, cp.endpoint, readerCert, p.osCA)).RenewClientCertificate(callCtx(t),
		&node.RenewClientCertificateRequest{Csr: renewalCSR(t, key, pkix.Name{}), CrtTtlSeconds: 7200})
	require.NoError(t, err)

	kubeconfig, err := admin.Kubeconfig(callCtx(t), &node.KubeconfigRequest{CrtTtlSeconds: 600})
	require.NoError(t, err)

	events := readAudit(t, admin, "")
	types := make([]string, 0, len(events))

	for _, e := range events {
		types = append(types, e.Type)
	}

	require.Equal(t, []string{audit.TypeClientIssued, audit.TypeClientRenewed, audit.TypeKubeconfigIssued}, types)

	for i, tc := range []struct {
		crtPEM   []byte
		issuer   []byte
		roles    []string
		lifetime string
	}{
		{issued.GetCrt(), p.osCA.CrtPEM, []string{role.Admin}, "1h0m0s"},
		{renewed.GetCrt(), p.osCA.CrtPEM, []string{role.Reader}, "2h0m0s"},
		{kubeconfigCertificate(t, kubeconfig.GetKubeconfig()), p.k8sCA.CrtPEM, []string{role.Admin}, "10m0s"},
	} {
		crt, err := certs.ParseCertificate(tc.crtPEM)
		require.NoError(t, err)

		issuer, err := certs.ParseCertificate(tc.issuer)
		require.NoError(t, err)

		e := events[i]
		assert.Equal(t, tc.roles, e.Caller.Roles, e.Type)
		assert.Equal(t, &audit.Certificate{
			Subject:     crt.Subject.String(),
			CommonName:  crt.Subject.CommonName,
			Roles:       crt.Subject.Organization,
			Serial:      revocation.FormatSerial(crt.SerialNumber),
			Fingerprint: certs.Fingerprint(crt),
			Issuer:      certs.Fingerprint(issuer),
			NotAfter:    crt.NotAfter.UTC(),
			Lifetime:    tc.lifetime,
		}, e.Certificate, e.Type)
	}

	data, err := json.Marshal(events)
	require.NoError(t, err)
	assert.NotContains(t, string(data), "-----BEGIN")
}

func kubeconfigCertificate(t *testing.T, kubeconfig []byte) []byte {
	t.Helper()

	cfg, err := clientcmd.Load(kubeconfig)
	require.NoError(t, err)
	require.Len(t, cfg.AuthInfos, 1)

	for _, user := range cfg.AuthInfos {
		return user.ClientCertificateData
	}

	return nil
}
