package api

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/resources/pki"
)

func setRevocations(t *testing.T, st state.State, entries ...revocation.Entry) {
	t.Helper()

	_, err := safe.StateUpdateWithConflicts(t.Context(), st, pki.NewRevocations(pki.RevocationsID).Metadata(), func(r *pki.Revocations) error {
		r.TypedSpec().Entries = entries

		return nil
	})
	if state.IsNotFoundError(err) {
		r := pki.NewRevocations(pki.RevocationsID)
		r.TypedSpec().Entries = entries
		err = st.Create(t.Context(), r)
	}

	require.NoError(t, err)
}

// TestRevokedCredential: a revoked certificate is refused on its next call, even on an
// established connection whose verdict was cached, its open streams (direct or forwarded) end,
// other credentials are unaffected, and removing the entry lets it back in.
func TestRevokedCredential(t *testing.T) {
	t.Parallel()

	p := getPKI(t)
	lisA, lisB := listenPairOn(t, "127.0.120.2", "127.0.120.3")
	a := startNode(t, p, nodeSpec{addr: "127.0.120.2", controlPlane: true, lis: lisA})
	startNode(t, p, nodeSpec{addr: "127.0.120.3", lis: lisB})
	addMember(t, a.st, "127.0.120.3")

	revoked := issueClientCert(t, p.osCA, clientCertSpec{roles: []string{role.Reader}})
	bySerial := issueClientCert(t, p.osCA, clientCertSpec{roles: []string{role.Reader}})
	other := issueClientCert(t, p.osCA, clientCertSpec{roles: []string{role.Reader}})

	conn := dial(t, a.endpoint, revoked, p.osCA)
	serialConn := dial(t, a.endpoint, bySerial, p.osCA)
	otherConn := dial(t, a.endpoint, other, p.osCA)
	admin := a.dialAs(t, p, role.Admin)

	_, err := nodeClient(conn).Version(callCtx(t), &node.VersionRequest{})
	require.NoError(t, err, "the verdict of the connection is cached before the revocation")

	openWatch := func(ctx context.Context, c tls.Certificate, target string) func() error {
		cn := dial(t, a.endpoint, c, p.osCA)
		if target != "" {
			ctx = toNode(ctx, target)
		}

		stream, err := v1alpha1.NewStateClient(cn).Watch(ctx, &v1alpha1.WatchRequest{
			Namespace: pki.NamespaceName, Type: pki.CertificateStatusesType, Id: pointerTo(pki.CertAPI), ApiVersion: 1,
		})
		require.NoError(t, err)

		_, err = stream.Recv()
		require.NoError(t, err)

		return func() error {
			for {
				if _, err := stream.Recv(); err != nil {
					return err
				}
			}
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	direct := openWatch(ctx, revoked, "")
	forwarded := openWatch(ctx, revoked, "127.0.120.3")

	leaf := revoked.Leaf
	entry := revocation.ForCertificate(leaf, p.osCA.Crt, "laptop lost")
	entry.Serial, entry.Issuer = "", ""

	serialLeaf := bySerial.Leaf
	serialEntry := revocation.Entry{Serial: revocation.FormatSerial(serialLeaf.SerialNumber), Issuer: certs.Fingerprint(p.osCA.Crt)}

	setRevocations(t, a.st, entry, serialEntry)

	for name, wait := range map[string]func() error{"direct": direct, "forwarded": forwarded} {
		err := wait()
		require.NoError(t, ctx.Err(), "the %s watch was not ended", name)
		assert.Contains(t, err.Error(), "revoked", "%s: %v", name, err)
	}

	for name, c := range map[string]node.NodeServiceClient{"by key": nodeClient(conn), "by serial": nodeClient(serialConn)} {
		_, err = c.Version(callCtx(t), &node.VersionRequest{})
		require.Error(t, err, name)
		assert.Equal(t, codes.Unauthenticated, status.Code(err), name)
		assert.Contains(t, err.Error(), "has been revoked", name)
	}

	_, err = nodeClient(dial(t, a.endpoint, revoked, p.osCA)).Version(callCtx(t), &node.VersionRequest{})
	assert.ErrorContains(t, err, "laptop lost", "a new connection is refused too, with the reason")

	for name, c := range map[string]node.NodeServiceClient{"another reader": nodeClient(otherConn), "admin": nodeClient(admin)} {
		_, err = c.Version(callCtx(t), &node.VersionRequest{})
		require.NoError(t, err, name)
	}

	setRevocations(t, a.st)

	eventually(t, func() error {
		if _, err := nodeClient(conn).Version(callCtx(t), &node.VersionRequest{}); err != nil {
			return fmt.Errorf("%w: %w", errNotYet, err)
		}

		return nil
	})
}
