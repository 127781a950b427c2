package nodeapi_test

import (
	"crypto/tls"
	stdx509 "crypto/x509"
	"encoding/base64"
	"net"

	"github.com/stretchr/testify/assert"
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

// serverCertificate does a fresh TLS handshake with a node's API and returns its certificate, or
// nil after recording the failure in t (a poll's collector: a failed dial is retried).
func serverCertificate(t assert.TestingT, address string, ca *stdx509.Certificate) *stdx509.Certificate {
	conn, err := tls.Dial("tcp", net.JoinHostPort(address, "50000"), &tls.Config{RootCAs: pool(ca), ServerName: address})
	if !assert.NoError(t, err) {
		return nil
	}

	defer conn.Close()

	return conn.ConnectionState().PeerCertificates[0]
}
