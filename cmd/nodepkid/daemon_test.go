package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestKubeAPIServerBinary(t *testing.T) {
	t.Parallel()

	wd, err := filepath.Abs(".")
	require.NoError(t, err)

	for _, tc := range []struct {
		name       string
		opts       daemonOptions
		want       string
		wantErrMsg string
	}{
		{name: "not asked", opts: daemonOptions{etcdBinary: "bin/etcd"}},
		{name: "with etcd", opts: daemonOptions{etcdBinary: "bin/etcd", kubeAPIServer: "bin/kube-apiserver"}, want: filepath.Join(wd, "bin", "kube-apiserver")},
		{name: "without etcd", opts: daemonOptions{kubeAPIServer: "bin/kube-apiserver"}, wantErrMsg: "--kube-apiserver-binary needs --etcd-binary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			got, err := kubeAPIServerBinary(tc.opts)
			if tc.wantErrMsg != "" {
				assert.ErrorContains(t, err, tc.wantErrMsg)

				return
			}

			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}
