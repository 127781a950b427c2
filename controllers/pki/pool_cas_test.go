package pki

import (
	"strings"
	"testing"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// TestPoolCAsLikeUncached checks that the remembered CAs of a root's pool always equal what
// parsing its AcceptedCA afresh gives, as the pools of several roots change.
func TestPoolCAsLikeUncached(t *testing.T) {
	t.Parallel()

	os1, os2, etcd := ctest.NewCA(t, certs.RootOS), ctest.NewCA(t, certs.RootOS), ctest.NewCA(t, certs.RootEtcd)

	pool := func(cas ...ctest.CA) *pki.AcceptedCA {
		res := pki.NewAcceptedCA("")
		for _, ca := range cas {
			res.TypedSpec().Certificates = append(res.TypedSpec().Certificates, string(ca.Crt))
		}

		return res
	}

	var cache poolCAs

	for _, tc := range []struct {
		name string
		root resource.ID
		pool *pki.AcceptedCA
	}{
		{"os", pki.RootOS, pool(os1)},
		{"os again", pki.RootOS, pool(os1)},
		{"etcd beside os", pki.RootEtcd, pool(etcd)},
		{"os rotation step", pki.RootOS, pool(os1, os2)},
		{"os order changed", pki.RootOS, pool(os2, os1)},
		{"os no pool", pki.RootOS, nil},
		{"os back to the first CA", pki.RootOS, pool(os1)},
		{"etcd unchanged", pki.RootEtcd, pool(etcd)},
	} {
		got := cache.get(tc.root, tc.pool)

		if tc.pool == nil {
			require.Nil(t, got, tc.name)

			continue
		}

		want, err := certs.ParseCertificates([]byte(strings.Join(tc.pool.TypedSpec().Certificates, "")))
		require.NoError(t, err, tc.name)
		require.Len(t, got, len(want), tc.name)

		for i := range want {
			require.True(t, want[i].Equal(got[i]), tc.name)
		}
	}

	require.Len(t, cache.byRoot, 2, "one entry per root")
}
