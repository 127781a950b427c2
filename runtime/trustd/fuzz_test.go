package trustd

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"net"
	"net/netip"
	"testing"

	"github.com/nodepki/nodepki/pkg/certs"
)

// FuzzCSRPolicy: any CSR input goes through parsing, the signing policy and the ownership rules
// without a panic, and whatever passes names only what the rules allow.
func FuzzCSRPolicy(f *testing.F) {
	crtPEM, keyPEM, err := certs.NewRootCA(certs.RootOS)
	if err != nil {
		f.Fatal(err)
	}

	ca, err := certs.LoadCA(crtPEM, keyPEM)
	if err != nil {
		f.Fatal(err)
	}

	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}

	for _, template := range []*x509.CertificateRequest{
		{Subject: pkix.Name{CommonName: "worker-1"}, DNSNames: []string{"worker-1"}, IPAddresses: []net.IP{net.ParseIP("10.5.0.3")}},
		{Subject: pkix.Name{CommonName: "cp-1"}, IPAddresses: []net.IP{net.ParseIP("10.5.0.2"), net.ParseIP("127.0.0.1")}},
		{Subject: pkix.Name{CommonName: "x"}, DNSNames: []string{"*.example"}},
	} {
		der, err := x509.CreateCertificateRequest(rand.Reader, template, key)
		if err != nil {
			f.Fatal(err)
		}

		f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		csr, err := parseCSR(data)
		if err != nil {
			return
		}

		profile, err := serverProfile(csr, ca)
		if err != nil {
			return
		}

		o := &ownership{requester: netip.MustParseAddr("10.5.0.3"), ips: map[netip.Addr]string{}, names: map[string]string{}}
		o.add("this control plane", "10.5.0.2", "cp-1")

		if o.checkProfile(profile) != nil {
			return
		}

		for _, ip := range profile.IPAddresses {
			addr, _ := netip.AddrFromSlice(ip)
			if addr.Unmap() == netip.MustParseAddr("10.5.0.2") || addr.IsLoopback() {
				t.Fatalf("signed %s for 10.5.0.3", ip)
			}
		}

		if len(profile.IPAddresses)+len(profile.DNSNames) > certs.MaxSANs {
			t.Fatalf("%d SANs", len(profile.IPAddresses)+len(profile.DNSNames))
		}
	})
}
