package kubernetes_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
	"github.com/nodepki/nodepki/pkg/kubernetes"
)

func newKubernetesCA(t testing.TB) *certs.CA {
	t.Helper()

	crt, key, err := certs.NewRootCA(certs.RootKubernetes)
	require.NoError(t, err)

	ca, err := certs.LoadCA(crt, key)
	require.NoError(t, err)

	return ca
}

func TestKubeconfigRenewal(t *testing.T) {
	t.Parallel()

	ca, other := newKubernetesCA(t), newKubernetesCA(t)
	bundle := kubernetes.PEMBundle([]string{string(ca.CrtPEM)})
	now := time.Now()

	specs := kubernetes.ComponentKubeconfigs("demo", "https://127.0.110.2:6443", bundle, 10*time.Hour)
	spec := specs[kubernetes.SchedulerKubeconfigFile]

	data, err := kubeconfig.Issue(ca, spec, now)
	require.NoError(t, err)

	crt, renewAt, err := kubernetes.KubeconfigRenewal(data, spec, ca.Crt)
	require.NoError(t, err)
	assert.Equal(t, "system:kube-scheduler", crt.Subject.CommonName)
	assert.WithinDuration(t, now.Add(5*time.Hour), renewAt, 2*time.Second, "half its life from its issuance")

	for _, tc := range []struct {
		name    string
		change  func(s *kubeconfig.Spec)
		issuer  *certs.CA
		wantErr string
	}{
		{name: "another server", change: func(s *kubeconfig.Spec) { s.Server = "https://127.0.110.3:6443" }, wantErr: "server https://127.0.110.2:6443"},
		{name: "another CA bundle", change: func(s *kubeconfig.Spec) { s.CABundle = other.CrtPEM }, wantErr: "CA data"},
		{name: "another cluster", change: func(s *kubeconfig.Spec) { s.ClusterName = "prod" }, wantErr: "names demo/"},
		{name: "another subject", change: func(s *kubeconfig.Spec) { *s = specs[kubernetes.ControllerManagerKubeconfigFile] }, wantErr: "names"},
		{name: "another issuer", issuer: other, wantErr: "not signed by the issuing Kubernetes CA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			want, issuer := spec, ca
			if tc.change != nil {
				tc.change(&want)
			}

			if tc.issuer != nil {
				issuer = tc.issuer
			}

			_, _, err := kubernetes.KubeconfigRenewal(data, want, issuer.Crt)
			assert.ErrorContains(t, err, tc.wantErr)
		})
	}

	_, _, err = kubernetes.KubeconfigRenewal([]byte("not: [a kubeconfig"), spec, ca.Crt)
	assert.ErrorContains(t, err, "not a kubeconfig")
}

func FuzzKubeconfigRenewal(f *testing.F) {
	ca := newKubernetesCA(f)
	spec := kubernetes.ComponentKubeconfigs("demo", "https://127.0.110.2:6443", kubernetes.PEMBundle([]string{string(ca.CrtPEM)}), time.Hour)[kubernetes.AdminKubeconfigFile]

	data, err := kubeconfig.Issue(ca, spec, time.Now())
	require.NoError(f, err)

	f.Add(data)
	f.Add([]byte("apiVersion: v1\nkind: Config\n"))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, data []byte) {
		crt, _, err := kubernetes.KubeconfigRenewal(data, spec, ca.Crt)
		if err == nil && crt.CheckSignatureFrom(ca.Crt) != nil {
			t.Fatal("accepted a client certificate the CA did not sign")
		}
	})
}
