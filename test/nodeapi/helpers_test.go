package nodeapi_test

import (
	"crypto/tls"
	stdx509 "crypto/x509"
	"encoding/base64"
	"net"
	"testing"

	"github.com/stretchr/testify/require"
)

func b64(data []byte) string {
	return base64.StdEncoding.EncodeToString(data)
}

func pool(crts ...*stdx509.Certificate) *stdx509.CertPool {
	p := stdx509.NewCertPool()
	for _, c := range crts {
		p.AddCert(c)
	}

	return p
}

// serverCertificate does a fresh TLS handshake with a node's API and returns its certificate.
func serverCertificate(t *testing.T, address string, ca *stdx509.Certificate) *stdx509.Certificate {
	t.Helper()

	conn, err := tls.Dial("tcp", net.JoinHostPort(address, "50000"), &tls.Config{RootCAs: pool(ca), ServerName: address})
	require.NoError(t, err)

	defer conn.Close() //nolint:errcheck

	return conn.ConnectionState().PeerCertificates[0]
}
