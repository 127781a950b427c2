package main

import (
	"net"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckMetricsAddress(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		address string
		wantErr string
	}{
		{address: ""},
		{address: "127.0.0.2:9180"},
		{address: "[::1]:9180"},
		{address: ":9180"},
		{address: "127.0.0.2", wantErr: "want ADDR:PORT"},
		{address: "localhost:9180", wantErr: `"localhost" is not an IP address`},
		{address: "127.0.0.2:0", wantErr: "is not a port"},
		{address: "127.0.0.2:65536", wantErr: "is not a port"},
		{address: "127.0.0.2:http", wantErr: "is not a port"},
	} {
		t.Run(tc.address, func(t *testing.T) {
			t.Parallel()

			err := checkMetricsAddress(tc.address)
			if tc.wantErr == "" {
				require.NoError(t, err)

				return
			}

			require.Error(t, err)
			assert.Contains(t, err.Error(), "--metrics-address")
			assert.Contains(t, err.Error(), tc.wantErr)
		})
	}
}

func FuzzCheckMetricsAddress(f *testing.F) {
	for _, seed := range []string{"", "127.0.0.2:9180", "[::1]:9180", ":1", "a:b:c", "[::1]", "1.2.3.4:99999"} {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, address string) {
		if checkMetricsAddress(address) != nil || address == "" {
			return
		}

		// What it accepts, net.Listen can be given: a host that is empty or an IP, and a port.
		_, port, err := net.SplitHostPort(address)
		require.NoError(t, err)

		n, err := strconv.Atoi(port)
		require.NoError(t, err)
		assert.True(t, n >= 1 && n <= 65535)
	})
}
