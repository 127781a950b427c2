package trustd

import (
	"slices"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/client"
)

func TestEndpointAddress(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		endpoint, address, host, err string
	}{
		{endpoint: "10.0.0.1", address: "10.0.0.1:50001", host: "10.0.0.1"},
		{endpoint: "10.0.0.1:6000", address: "10.0.0.1:6000", host: "10.0.0.1"},
		{endpoint: "cp.example.com", address: "cp.example.com:50001", host: "cp.example.com"},
		{endpoint: "cp.example.com:6000", address: "cp.example.com:6000", host: "cp.example.com"},
		{endpoint: "fd00::1", address: "[fd00::1]:50001", host: "fd00::1"},
		{endpoint: "[fd00::1]", address: "[fd00::1]:50001", host: "fd00::1"},
		{endpoint: "[fd00::1]:6000", address: "[fd00::1]:6000", host: "fd00::1"},
		{endpoint: "https://cp.example.com:6443", address: "cp.example.com:6443", host: "cp.example.com"},
		{endpoint: "", err: "endpoint is empty"},
		{endpoint: "a:b:c", err: "no valid host"},
		{endpoint: ":6000", err: "no valid host"},
		{endpoint: "cp.example.com:99999", err: "not a number between 1 and 65535"},
	} {
		t.Run(tc.endpoint, func(t *testing.T) {
			t.Parallel()

			endpoint, err := client.ParseEndpointWithPort(tc.endpoint, DefaultPort)
			if tc.err != "" {
				require.ErrorContains(t, err, tc.err)

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.address, endpoint.Address())
			assert.Equal(t, tc.host, endpoint.Host)
		})
	}
}

func TestTokenAccepted(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name      string
		presented string
		tokens    []string
		want      bool
	}{
		{name: "first", presented: "a.b", tokens: []string{"a.b", "c.d"}, want: true},
		{name: "second", presented: "c.d", tokens: []string{"a.b", "c.d"}, want: true},
		{name: "unknown", presented: "e.f", tokens: []string{"a.b", "c.d"}},
		{name: "prefix", presented: "a.", tokens: []string{"a.b"}},
		{name: "empty presented", presented: "", tokens: []string{"", "a.b"}},
		{name: "no tokens", presented: "a.b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			assert.Equal(t, tc.want, tokenAccepted(tc.presented, tc.tokens))
		})
	}
}

func TestPeerLimiter(t *testing.T) {
	t.Parallel()

	limiter := newPeerLimiter(1, 2, 3)
	now := time.Now()

	assert.True(t, limiter.allow("10.0.0.1", now))
	assert.True(t, limiter.allow("10.0.0.1", now))
	assert.False(t, limiter.allow("10.0.0.1", now), "past the burst")
	assert.True(t, limiter.allow("10.0.0.2", now), "IPv4 peers have separate buckets")

	assert.True(t, limiter.allow("fd00::1", now))
	assert.True(t, limiter.allow("fd00::ffff:2", now))
	assert.False(t, limiter.allow("fd00::3", now), "an IPv6 /64 shares one bucket")
	assert.True(t, limiter.allow("fd00:0:0:1::1", now), "another /64 has its own")

	assert.Len(t, limiter.buckets, 3, "the table is bounded")
	assert.Equal(t, 3, limiter.order.Len())

	assert.True(t, limiter.allow("10.0.0.1", now), "the least recently seen peer was forgotten")
}

func TestNewRateLimitDefaults(t *testing.T) {
	t.Parallel()

	st := state.WrapCore(namespaced.NewState(inmem.Build))

	srv, err := New(Options{State: st})
	require.NoError(t, err)
	assert.Equal(t, DefaultRateLimit, srv.limiter.limit)
	assert.Equal(t, DefaultRateBurst, srv.limiter.burst)

	assert.Equal(t, CertificateLifetime, srv.lifetime)

	_, err = New(Options{State: st, RateBurst: -1})
	require.ErrorContains(t, err, "must not be negative")

	_, err = New(Options{State: st, Lifetime: CertificateLifetime + time.Second})
	require.ErrorContains(t, err, "at most 24h0m0s")
}

func TestLastDerived(t *testing.T) {
	t.Parallel()

	derived := 0
	d := lastDerived[[]string, []byte]{
		equal: slices.Equal[[]string],
		derive: func(certificates []string) ([]byte, error) {
			derived++

			return buildCABundle(certificates)
		},
	}

	for _, step := range []struct {
		name         string
		certificates []string
		want         string
		wantErr      bool
		derivedSoFar int
	}{
		{name: "first input is derived", certificates: []string{"A\n", "B"}, want: "A\nB\n", derivedSoFar: 1},
		{name: "an equal input (another slice) is not", certificates: []string{"A\n", "B"}, want: "A\nB\n", derivedSoFar: 1},
		{name: "a changed input is", certificates: []string{"B"}, want: "B\n", derivedSoFar: 2},
		{name: "a failed derivation is returned", certificates: nil, wantErr: true, derivedSoFar: 3},
		{name: "and not kept", certificates: nil, wantErr: true, derivedSoFar: 4},
		{name: "the last good value is still there", certificates: []string{"B"}, want: "B\n", derivedSoFar: 4},
	} {
		got, err := d.get(step.certificates)

		if step.wantErr {
			require.Error(t, err, step.name)
		} else {
			require.NoError(t, err, step.name)
			assert.Equal(t, step.want, string(got), step.name)
		}

		assert.Equal(t, step.derivedSoFar, derived, step.name)
	}
}
