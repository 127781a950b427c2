package pki

import (
	stdx509 "crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/certs"
)

// TestVerificationsMatchVerify runs the same verifications through the controller's memory and
// through verify alone: the outcomes are the same, in any order, over pool changes and over time.
func TestVerificationsMatchVerify(t *testing.T) {
	t.Parallel()

	parse := func(ca ctest.CA) *stdx509.Certificate {
		crt, err := certs.ParseCertificate(ca.Crt)
		require.NoError(t, err)

		return crt
	}

	a, b, other := ctest.NewCA(t, certs.RootEtcd), ctest.NewCA(t, certs.RootEtcd), ctest.NewCA(t, certs.RootEtcd)
	caA, caB, caOther := parse(a), parse(b), parse(other)
	now := time.Now()

	leaf := func(ca ctest.CA, lifetime time.Duration) *stdx509.Certificate {
		loaded, err := certs.LoadCA(ca.Crt, ca.Key)
		require.NoError(t, err)

		issued, err := loaded.IssueParsed(certs.Profile{CommonName: "x", ExtKeyUsage: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth}, Lifetime: lifetime}, now)
		require.NoError(t, err)

		return issued.Crt
	}

	byA, byB, expired := leaf(a, time.Hour), leaf(b, time.Hour), leaf(a, time.Second)
	pools := [][]*stdx509.Certificate{
		{caA}, {caA, caB}, {caB, caA}, {caB}, {caOther}, nil, {caA, caA}, {caOther, caA},
	}
	times := []time.Time{now, now.Add(time.Minute), caA.NotAfter.Add(time.Second), now}

	memory := newVerifications(3) // small, so that entries are also forgotten

	for _, at := range times {
		for _, crt := range []*stdx509.Certificate{byA, byB, expired} {
			for _, pool := range pools {
				want := verify(crt, pool, at)

				assert.Equal(t, want, memory.verify(crt, pool, at), "first look")
				assert.Equal(t, want, memory.verify(crt, pool, at), "second look")
			}
		}
	}

	assert.LessOrEqual(t, len(memory.entries), 3)
}
