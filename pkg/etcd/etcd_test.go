package etcd

import (
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestArgs(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name     string
		cfg      MemberConfig
		want     []string
		wantNone []string
	}{
		{
			name: "restart with data",
			cfg:  MemberConfig{DataDir: "/s/etcd", PKIDir: "/s/pki", Address: netip.MustParseAddr("10.5.0.2")},
			want: []string{
				"--name=10.5.0.2", "--data-dir=/s/etcd",
				"--listen-client-urls=https://10.5.0.2:2379", "--listen-peer-urls=https://10.5.0.2:2380",
				"--client-cert-auth", "--peer-client-cert-auth",
				"--trusted-ca-file=/s/pki/ca.crt", "--peer-trusted-ca-file=/s/pki/ca.crt",
				"--cert-file=/s/pki/server.crt", "--peer-key-file=/s/pki/peer.key",
			},
			wantNone: []string{"--peer-skip-client-san-verification", "--initial-cluster-state=new", "--initial-cluster-state=existing"},
		},
		{
			name: "bootstrap on loopback",
			cfg: MemberConfig{
				DataDir: "/s/etcd", PKIDir: "/s/pki", Address: netip.MustParseAddr("127.0.0.2"),
				InitialCluster: "127.0.0.2=https://127.0.0.2:2380", InitialClusterState: "new",
			},
			want: []string{"--peer-skip-client-san-verification", "--initial-cluster=127.0.0.2=https://127.0.0.2:2380", "--initial-cluster-state=new"},
		},
		{
			name: "IPv6",
			cfg:  MemberConfig{Address: netip.MustParseAddr("2001:db8::2")},
			want: []string{"--advertise-client-urls=https://[2001:db8::2]:2379", "--initial-advertise-peer-urls=https://[2001:db8::2]:2380"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			args := tc.cfg.Args()

			for _, want := range tc.want {
				assert.Contains(t, args, want)
			}

			for _, none := range tc.wantNone {
				assert.NotContains(t, args, none)
			}
		})
	}
}

func TestInitialCluster(t *testing.T) {
	t.Parallel()

	assert.Equal(t, "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380,b=https://10.0.0.3:2380",
		InitialCluster(map[string][]string{"b": {"https://10.0.0.2:2380", "https://10.0.0.3:2380"}, "a": {"https://10.0.0.1:2380"}}))
}

func TestAdoptStalePIDFile(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	cfg := MemberConfig{DataDir: filepath.Join(dir, "etcd"), PIDFile: filepath.Join(dir, "etcd.pid")}

	// This test process is running, but it is no etcd of this data directory.
	require.NoError(t, os.WriteFile(cfg.PIDFile, []byte(strconv.Itoa(os.Getpid())+"\nabcd\n"), 0o600))

	proc, err := Adopt(cfg)
	require.NoError(t, err)
	assert.Nil(t, proc)
	assert.NoFileExists(t, cfg.PIDFile, "a stale pidfile is removed")

	proc, err = Adopt(cfg)
	require.NoError(t, err)
	assert.Nil(t, proc, "no pidfile, nothing to adopt")
}
