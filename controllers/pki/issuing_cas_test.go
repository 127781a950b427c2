package pki

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/certs"
)

// TestIssuingCAsLikeUncached checks that the remembered issuing CA of a root always equals what
// parsing and loading its RootSecret afresh gives, errors included, as the RootSecret changes.
func TestIssuingCAsLikeUncached(t *testing.T) {
	t.Parallel()

	osCA, osCA2, etcdCA := ctest.NewCA(t, certs.RootOS), ctest.NewCA(t, certs.RootOS), ctest.NewCA(t, certs.RootEtcd)

	var cas issuingCAs

	for _, tc := range []struct {
		name, root, crt, key string
	}{
		{"os", "os", string(osCA.Crt), string(osCA.Key)},
		{"os again", "os", string(osCA.Crt), string(osCA.Key)},
		{"etcd beside os", "etcd", string(etcdCA.Crt), string(etcdCA.Key)},
		{"os rotated", "os", string(osCA2.Crt), string(osCA2.Key)},
		{"os key of another CA", "os", string(osCA2.Crt), string(osCA.Key)},
		{"os key not PEM", "os", string(osCA2.Crt), "not a key"},
		{"os certificate not PEM", "os", "not a certificate", string(osCA2.Key)},
		{"os back to the first CA", "os", string(osCA.Crt), string(osCA.Key)},
		{"etcd unchanged", "etcd", string(etcdCA.Crt), string(etcdCA.Key)},
	} {
		got := cas.get(tc.root, tc.crt, tc.key)

		wantCrt, wantCrtErr := certs.ParseCertificate([]byte(tc.crt))
		if wantCrtErr != nil {
			require.EqualError(t, got.crtErr, wantCrtErr.Error(), tc.name)

			continue
		}

		require.NoError(t, got.crtErr, tc.name)
		require.True(t, wantCrt.Equal(got.crt), tc.name)
		require.Equal(t, certs.Fingerprint(wantCrt), got.fingerprint, tc.name)

		wantCA, wantErr := certs.LoadCA([]byte(tc.crt), []byte(tc.key))
		gotCA, gotErr := got.load()

		if wantErr != nil {
			require.EqualError(t, gotErr, wantErr.Error(), tc.name)

			continue
		}

		require.NoError(t, gotErr, tc.name)
		require.True(t, wantCA.Crt.Equal(gotCA.Crt), tc.name)
		require.Equal(t, wantCA.KeyPEM, gotCA.KeyPEM, tc.name)

		// The remembered CA signs what its issuing certificate verifies.
		issued, err := gotCA.IssueParsed(certs.Profile{CommonName: "leaf", Lifetime: time.Hour}, time.Now())
		require.NoError(t, err, tc.name)
		require.NoError(t, issued.Crt.CheckSignatureFrom(wantCrt), tc.name)
	}

	require.Len(t, cas.byRoot, 2, "one entry per root")
}
