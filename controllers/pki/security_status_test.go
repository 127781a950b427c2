package pki_test

import (
	"testing"
	"testing/synctest"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/rtestutils"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	ctrlpki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/resources/pki"
)

var tlsVersions = []string{"TLS 1.3"}

func TestSecurityStatusSumsUp(t *testing.T) {
	t.Parallel()

	base := time.Date(2026, 3, 4, 12, 0, 0, 0, time.UTC)
	at := func(h int) pki.Time { return pki.NewTime(base.Add(time.Duration(h) * time.Hour)) }

	type leaf struct {
		trusted  bool
		state    string
		notAfter pki.Time
	}

	for _, tc := range []struct {
		name   string
		keys   map[resource.ID]string // root -> issuing key
		leaves map[resource.ID]leaf
		cas    map[resource.ID]pki.Time
		want   pki.SecurityStatusSpec
	}{
		{
			name: "empty node",
			want: pki.SecurityStatusSpec{CAKeys: []string{}, LeavesTrusted: true, LeavesUnexpired: true, APITLSVersions: tlsVersions},
		},
		{
			name: "control plane, all well, a CA expires first",
			keys: map[resource.ID]string{pki.RootEtcd: "K", pki.RootOS: "K", pki.RootKubernetes: "K"},
			leaves: map[resource.ID]leaf{
				pki.CertAPI:        {true, pki.StateValid, at(24)},
				pki.CertEtcdServer: {true, pki.StateRenewing, at(8760)},
			},
			cas: map[resource.ID]pki.Time{"os-0123456789ab": at(10), "etcd-ba9876543210": at(87600)},
			want: pki.SecurityStatusSpec{
				CAKeys: []string{"os", "kubernetes", "etcd"}, Leaves: 2, LeavesTrusted: true, LeavesUnexpired: true,
				EarliestExpiry: at(10), EarliestExpiryOf: "ca/os-0123456789ab", APITLSVersions: tlsVersions,
			},
		},
		{
			name: "worker: certificate only, one leaf expired, one untrusted, one pending",
			keys: map[resource.ID]string{pki.RootOS: ""},
			leaves: map[resource.ID]leaf{
				pki.CertAPI:        {true, pki.StateExpired, at(-1)},
				pki.CertAPIClient:  {false, pki.StateUntrusted, at(5)},
				pki.CertEtcdClient: {false, pki.StatePending, pki.Time{}},
				pki.CertTrustd:     {true, pki.StateExpiring, at(2)},
			},
			want: pki.SecurityStatusSpec{
				CAKeys: []string{}, Leaves: 4, LeavesTrusted: false, LeavesUnexpired: false,
				Problems:       []string{"api: expired", "api-client: untrusted", "etcd-client: pending", "trustd: expiring"},
				EarliestExpiry: at(-1), EarliestExpiryOf: "certificate/api", APITLSVersions: tlsVersions,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			env := ctest.Run(t, ctrlpki.NewSecurityStatusController(tlsVersions))

			for id, key := range tc.keys {
				require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewRootSecret(id), func(res *pki.RootSecret) error {
					res.TypedSpec().IssuingCert, res.TypedSpec().IssuingKey = "C", key

					return nil
				}))
			}

			for id, l := range tc.leaves {
				require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewCertificateStatus(id), func(res *pki.CertificateStatus) error {
					*res.TypedSpec() = pki.CertificateStatusSpec{Trusted: l.trusted, State: l.state, NotAfter: l.notAfter}

					return nil
				}))
			}

			for id, notAfter := range tc.cas {
				require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewCAStatus(id), func(res *pki.CAStatus) error {
					res.TypedSpec().NotAfter = notAfter

					return nil
				}))
			}

			rtestutils.AssertResources(env.Ctx, t, env.State, []resource.ID{pki.SecurityStatusID}, func(res *pki.SecurityStatus, a *assert.Assertions) {
				a.Equal(tc.want, *res.TypedSpec())
			})
		})
	}
}

// TestSecurityStatusOfNodes runs the whole graph: a control plane holds every root's key and its
// leaves are trusted and unexpired; a worker that cannot reach trustd holds no key and says why
// its leaves are not trusted yet.
func TestSecurityStatusOfNodes(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)

	for _, tc := range []struct {
		name   string
		worker bool
	}{
		{name: "control plane"},
		{name: "worker", worker: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			env := runGraph(t, ctrlpki.NewCAStatusesController(), ctrlpki.NewSecurityStatusController(tlsVersions))

			if tc.worker {
				env.SetMachineConfig(t, ctest.Worker(s))
			} else {
				env.SetMachineConfig(t, ctest.ControlPlane(s))
			}

			rtestutils.AssertResources(env.Ctx, t, env.State, []resource.ID{pki.SecurityStatusID}, func(res *pki.SecurityStatus, a *assert.Assertions) {
				spec := res.TypedSpec()

				a.Equal(tlsVersions, spec.APITLSVersions)
				a.Zero(spec.RevocationListVersion)
				a.NotZero(spec.Leaves)
				a.False(spec.EarliestExpiry.IsZero())

				if tc.worker {
					a.Empty(spec.CAKeys)
					a.False(spec.LeavesTrusted)
					a.Contains(spec.Problems, "api: pending")

					return
				}

				a.Equal([]string{"os", "kubernetes", "etcd", "aggregator", "service-account"}, spec.CAKeys)
				a.True(spec.LeavesTrusted)
				a.True(spec.LeavesUnexpired)
				a.Empty(spec.Problems)
				// The node API certificate family lives 24 h, everything else a year or more.
				a.Contains([]string{"certificate/api", "certificate/api-client", "certificate/trustd"}, spec.EarliestExpiryOf)
			})
		})
	}
}

// TestSecurityStatusSumsUpABurstOnce runs in a synctest bubble: ten statuses written one after the
// other, each given the time to be seen, within the controller's interval, are summed up by the
// pass of the first change and one pass after the interval, not by a pass each.
func TestSecurityStatusSumsUpABurstOnce(t *testing.T) {
	t.Parallel()

	synctest.Test(t, func(t *testing.T) {
		env := ctest.Run(t, ctrlpki.NewSecurityStatusController(tlsVersions))

		ids := []resource.ID{
			pki.CertAPI, pki.CertAPIClient, pki.CertEtcdServer, pki.CertEtcdPeer, pki.CertEtcdClient,
			pki.CertEtcdAdmin, pki.CertKubeAPIServer, pki.CertKubeAPIServerKubeletClient, pki.CertFrontProxyClient, pki.CertTrustd,
		}

		for _, id := range ids {
			require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewCertificateStatus(id), func(res *pki.CertificateStatus) error {
				*res.TypedSpec() = pki.CertificateStatusSpec{Trusted: true, State: pki.StateValid}

				return nil
			}))

			// The controller has done whatever it does for this change.
			synctest.Wait()
		}

		// Waiting for the sum of all ten lets the bubble's clock move past the interval.
		events := make(chan safe.WrappedStateEvent[*pki.SecurityStatus], 16)
		require.NoError(t, safe.StateWatch(env.Ctx, env.State, pki.NewSecurityStatus().Metadata(), events))

		for {
			var ev safe.WrappedStateEvent[*pki.SecurityStatus]

			select {
			case ev = <-events:
			case <-env.Ctx.Done():
				t.Fatal("timeout waiting for the sum of all statuses")
			}

			if ev.Type() != state.Created && ev.Type() != state.Updated {
				continue
			}

			res, err := ev.Resource()
			require.NoError(t, err)

			if res.TypedSpec().Leaves != len(ids) {
				continue
			}

			// Created by the first pass (one status or none), updated by the second (all ten).
			assert.Equal(t, "2", res.Metadata().Version().String())

			return
		}
	})
}
