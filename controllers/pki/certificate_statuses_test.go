package pki_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	stdx509 "crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
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
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// issue signs a server certificate for node-1 with ca, as if issued at issuedAt.
func issue(t *testing.T, ca ctest.CA, issuedAt time.Time, lifetime time.Duration) (crtPEM, keyPEM string) {
	t.Helper()

	loaded, err := certs.LoadCA(ca.Crt, ca.Key)
	require.NoError(t, err)

	crt, key, err := loaded.Issue(certs.Profile{
		CommonName:  testHostname,
		DNSNames:    []string{testHostname},
		IPAddresses: []net.IP{net.ParseIP("10.5.0.2")},
		KeyUsage:    stdx509.KeyUsageDigitalSignature,
		ExtKeyUsage: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageServerAuth},
		Lifetime:    lifetime,
	}, issuedAt)
	require.NoError(t, err)

	return string(crt), string(key)
}

func setAcceptedCAs(t *testing.T, env *ctest.Env, root resource.ID, cas ...ctest.CA) {
	t.Helper()

	require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewAcceptedCA(root), func(res *pki.AcceptedCA) error {
		spec := pki.AcceptedCASpec{}
		for _, ca := range cas {
			spec.Certificates = append(spec.Certificates, string(ca.Crt))
			spec.Fingerprints = append(spec.Fingerprints, ca.Fingerprint(t))
		}

		*res.TypedSpec() = spec

		return nil
	}))
}

func setNodeCertificate(t *testing.T, env *ctest.Env, id resource.ID, spec pki.NodeCertificateSpec) {
	t.Helper()

	require.NoError(t, safe.StateModify(env.Ctx, env.State, pki.NewNodeCertificate(id), func(res *pki.NodeCertificate) error {
		*res.TypedSpec() = spec
		// Labelled as NodeCertificatesController labels it.
		res.Metadata().Labels().Set(pki.LabelRoot, spec.Root)

		return nil
	}))
}

func TestCertificateStatuses(t *testing.T) {
	t.Parallel()

	accepted, other := ctest.NewCA(t, certs.RootEtcd), ctest.NewCA(t, certs.RootEtcd)
	now := time.Now()

	for _, tc := range []struct {
		name        string
		root        resource.ID
		spec        func() pki.NodeCertificateSpec
		wantState   string
		wantTrusted bool
		wantIssuer  string
		wantError   string
	}{
		{
			name: "valid",
			spec: func() pki.NodeCertificateSpec {
				crt, key := issue(t, accepted, now, time.Hour)

				// The reported issuer is the CA that verifiably signed it, not what the spec claims.
				return pki.NodeCertificateSpec{Certificate: crt, Key: key, IssuerFingerprint: "claimed"}
			},
			wantState: pki.StateValid, wantTrusted: true, wantIssuer: accepted.Fingerprint(t),
		},
		{
			name: "renewing past RenewAt",
			spec: func() pki.NodeCertificateSpec {
				crt, key := issue(t, accepted, now.Add(-50*time.Minute), time.Hour)

				return pki.NodeCertificateSpec{Certificate: crt, Key: key}
			},
			wantState: pki.StateRenewing, wantTrusted: true, wantIssuer: accepted.Fingerprint(t),
		},
		{
			name: "expiring in the last 10% of its life",
			spec: func() pki.NodeCertificateSpec {
				crt, key := issue(t, accepted, now.Add(-57*time.Minute), time.Hour)

				return pki.NodeCertificateSpec{Certificate: crt, Key: key}
			},
			wantState: pki.StateExpiring, wantTrusted: true, wantIssuer: accepted.Fingerprint(t),
		},
		{
			name: "expired",
			spec: func() pki.NodeCertificateSpec {
				// Expired, but within the life of the (freshly generated) CA, so the chain still verifies.
				crt, key := issue(t, accepted, now.Add(-30*time.Second), 10*time.Second)

				return pki.NodeCertificateSpec{Certificate: crt, Key: key}
			},
			wantState: pki.StateExpired, wantTrusted: true, wantIssuer: accepted.Fingerprint(t),
		},
		{
			name: "not valid yet",
			spec: func() pki.NodeCertificateSpec {
				crt, key := issue(t, accepted, now.Add(2*time.Hour), time.Hour)

				return pki.NodeCertificateSpec{Certificate: crt, Key: key}
			},
			wantState: pki.StateExpired, wantTrusted: true, wantIssuer: accepted.Fingerprint(t),
		},
		{
			name: "signed by a CA that is no longer accepted",
			spec: func() pki.NodeCertificateSpec {
				crt, key := issue(t, other, now, time.Hour)

				return pki.NodeCertificateSpec{Certificate: crt, Key: key, CABundle: string(other.Crt)}
			},
			wantState: pki.StateUntrusted, wantIssuer: other.Fingerprint(t),
		},
		{
			name: "root without accepted CAs",
			root: pki.RootAggregator,
			spec: func() pki.NodeCertificateSpec {
				crt, key := issue(t, accepted, now, time.Hour)

				return pki.NodeCertificateSpec{Certificate: crt, Key: key, IssuerFingerprint: "claimed"}
			},
			wantState: pki.StateUntrusted, wantIssuer: "claimed",
		},
		{
			name: "not issued yet",
			spec: func() pki.NodeCertificateSpec {
				return pki.NodeCertificateSpec{LastError: "trustd unreachable"}
			},
			wantState: pki.StatePending, wantError: "trustd unreachable",
		},
		{
			name: "unreadable certificate",
			spec: func() pki.NodeCertificateSpec {
				return pki.NodeCertificateSpec{Certificate: "garbage"}
			},
			wantState: pki.StatePending, wantError: "certificate: not PEM",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			env := ctest.Run(t, ctrlpki.NewCertificateStatusesController(nil))
			setAcceptedCAs(t, env, pki.RootEtcd, accepted)

			spec := tc.spec()
			spec.Root = pki.RootEtcd

			if tc.root != "" {
				spec.Root = tc.root
			}

			setNodeCertificate(t, env, pki.CertEtcdServer, spec)

			rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertEtcdServer, func(res *pki.CertificateStatus, a *assert.Assertions) {
				status := res.TypedSpec()

				a.Equal(tc.wantState, status.State)
				a.Equal(tc.wantTrusted, status.Trusted)
				a.Equal(tc.wantIssuer, status.IssuerFingerprint)
				a.Equal(tc.wantIssuer[:min(len(tc.wantIssuer), 12)], status.IssuerShortFingerprint)
				a.Contains(status.LastError, tc.wantError)
				a.Equal(spec.Root, status.Root)

				if tc.wantState == pki.StatePending {
					a.Empty(status.Serial)

					return
				}

				crt := parseCertificate(t, spec.Certificate)

				a.Equal("CN="+testHostname, status.Subject)
				a.Equal([]string{testHostname}, status.DNSNames)
				a.Equal([]string{"10.5.0.2"}, status.IPAddresses)
				a.Equal(crt.SerialNumber.Text(16), status.Serial)
				a.Equal(crt.Issuer.String(), status.Issuer)
				a.Equal(crt.NotBefore.UTC().Format(time.RFC3339), status.NotBefore.String())
				a.Equal(crt.NotAfter.UTC().Format(time.RFC3339), status.NotAfter.String())
				a.NotEmpty(status.RenewAt)
			})
		})
	}
}

// TestCertificateStatusesFollowTimeAndTrust runs in a synctest bubble: each state transition is
// reached by the controller's own requeue on the (fake) clock.
func TestCertificateStatusesFollowTimeAndTrust(t *testing.T) {
	t.Parallel()

	// Inside the bubble, so that the CAs are valid at its (fake) time.
	synctest.Test(t, func(t *testing.T) {
		ca, next := ctest.NewCA(t, certs.RootOS), ctest.NewCA(t, certs.RootOS)
		env := ctest.Run(t, ctrlpki.NewCertificateStatusesController(nil))
		setAcceptedCAs(t, env, pki.RootOS, ca)

		// Collect every state the status goes through.
		events := make(chan safe.WrappedStateEvent[*pki.CertificateStatus], 64)
		require.NoError(t, safe.StateWatch(env.Ctx, env.State, pki.NewCertificateStatus(pki.CertAPI).Metadata(), events))

		// A 20 s certificate: renewing at about 13 s, expiring at 18 s, expired at 20 s.
		crt, key := issue(t, ca, time.Now(), 20*time.Second)
		setNodeCertificate(t, env, pki.CertAPI, pki.NodeCertificateSpec{Root: pki.RootOS, Certificate: crt, Key: key})

		var states []string

		for len(states) == 0 || states[len(states)-1] != pki.StateExpired {
			select {
			case ev := <-events:
				if ev.Type() != state.Created && ev.Type() != state.Updated {
					continue
				}

				res, err := ev.Resource()
				require.NoError(t, err)

				if s := res.TypedSpec().State; len(states) == 0 || states[len(states)-1] != s {
					states = append(states, s)
				}
			case <-env.Ctx.Done():
				t.Fatalf("timeout; states so far: %v", states)
			}
		}

		require.Equal(t, []string{pki.StateValid, pki.StateRenewing, pki.StateExpiring, pki.StateExpired}, states)

		// Trust follows the accepted CAs.
		crt, key = issue(t, ca, time.Now(), time.Hour)
		setNodeCertificate(t, env, pki.CertAPI, pki.NodeCertificateSpec{Root: pki.RootOS, Certificate: crt, Key: key})
		rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
			a.Equal(pki.StateValid, res.TypedSpec().State)
		})

		setAcceptedCAs(t, env, pki.RootOS, next)
		rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
			a.Equal(pki.StateUntrusted, res.TypedSpec().State)
			a.False(res.TypedSpec().Trusted)
		})

		setAcceptedCAs(t, env, pki.RootOS, ca, next)
		rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
			a.Equal(pki.StateValid, res.TypedSpec().State)
			a.True(res.TypedSpec().Trusted)
		})

		// A failed renewal of a still good certificate is reported as such, with the reason.
		setNodeCertificate(t, env, pki.CertAPI, pki.NodeCertificateSpec{Root: pki.RootOS, Certificate: crt, Key: key, LastError: "trustd refused the CSR"})
		rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
			a.Equal(pki.StateRenewalFailing, res.TypedSpec().State)
			a.True(res.TypedSpec().Trusted)
			a.Equal("trustd refused the CSR", res.TypedSpec().LastError)
		})

		require.NoError(t, env.State.TeardownAndDestroy(env.Ctx, pki.NewNodeCertificate(pki.CertAPI).Metadata()))
		rtestutils.AssertNoResource[*pki.CertificateStatus](env.Ctx, t, env.State, pki.CertAPI)
	})
}

// TestCertificateTrustNeedsTheUsage: a certificate chains to an accepted CA only for usages the CA
// may certify; x509 verification decides, with the certificate's own extended key usages.
func TestCertificateTrustNeedsTheUsage(t *testing.T) {
	t.Parallel()

	// A CA restricted to client authentication cannot vouch for a server certificate.
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)

	template := &stdx509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client-only CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: stdx509.KeyUsageCertSign,
		ExtKeyUsage: []stdx509.ExtKeyUsage{stdx509.ExtKeyUsageClientAuth},
	}
	caDER, err := stdx509.CreateCertificate(rand.Reader, template, template, caKey.Public(), caKey)
	require.NoError(t, err)

	caKeyDER, err := stdx509.MarshalPKCS8PrivateKey(caKey)
	require.NoError(t, err)

	ca := ctest.CA{
		Crt: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		Key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: caKeyDER}),
	}

	env := ctest.Run(t, ctrlpki.NewCertificateStatusesController(nil))
	setAcceptedCAs(t, env, pki.RootOS, ca)

	crt, key := issue(t, ca, time.Now(), time.Hour) // a server certificate
	setNodeCertificate(t, env, pki.CertAPI, pki.NodeCertificateSpec{Root: pki.RootOS, Certificate: crt, Key: key})

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertAPI, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.False(res.TypedSpec().Trusted)
		a.Equal(pki.StateUntrusted, res.TypedSpec().State)
		a.Equal(ca.Fingerprint(t), res.TypedSpec().IssuerFingerprint, "the signer is still named")
	})
}

// TestCertificateStatusesFollowThePoolWithoutReissue: a pool change reaches the status of a locally
// issued certificate through its NodeCertificate, also when the certificate is not reissued and
// its issuance error stays the same (no issuing key): the new pool is written into it as its bundle.
func TestCertificateStatusesFollowThePoolWithoutReissue(t *testing.T) {
	t.Parallel()

	s := ctest.NewSecrets(t)
	other := ctest.NewCA(t, certs.RootEtcd)
	env := runGraph(t)

	env.SetMachineConfig(t, ctest.ControlPlane(s))
	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertEtcdServer, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateValid, res.TypedSpec().State)
		a.True(res.TypedSpec().Trusted)
	})

	serial := func(t *testing.T) string {
		t.Helper()

		crt, err := safe.StateGetByID[*pki.NodeCertificate](env.Ctx, env.State, pki.CertEtcdServer)
		require.NoError(t, err)

		return parseCertificate(t, crt.TypedSpec().Certificate).SerialNumber.Text(16)
	}
	issued := serial(t)

	// The etcd CA without its key: the certificate is kept and cannot be renewed.
	doc := ctest.ControlPlane(s)
	doc.Cluster.Etcd.CA = s.Etcd.CertOnly()
	env.SetMachineConfig(t, doc)

	var lastError string

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertEtcdServer, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateRenewalFailing, res.TypedSpec().State)
		a.True(res.TypedSpec().Trusted)
		a.NotEmpty(res.TypedSpec().LastError)

		lastError = res.TypedSpec().LastError
	})

	// Another CA, also without its key, replaces it in the pool: same error, same certificate,
	// which the pool no longer trusts.
	doc.Cluster.Etcd.CA = other.CertOnly()
	env.SetMachineConfig(t, doc)

	rtestutils.AssertResource(env.Ctx, t, env.State, pki.CertEtcdServer, func(res *pki.CertificateStatus, a *assert.Assertions) {
		a.Equal(pki.StateUntrusted, res.TypedSpec().State)
		a.False(res.TypedSpec().Trusted)
		a.Equal(lastError, res.TypedSpec().LastError)
		a.Equal(issued, res.TypedSpec().Serial)
	})
	require.Equal(t, issued, serial(t))
}
