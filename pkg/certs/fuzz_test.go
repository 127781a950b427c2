package certs_test

import (
	"testing"

	"github.com/nodepki/nodepki/pkg/certs"
)

// FuzzPEM: the PEM and certificate helpers take any input without a panic.
func FuzzPEM(f *testing.F) {
	crt, key, err := certs.NewRootCA(certs.RootOS)
	if err != nil {
		f.Fatal(err)
	}

	ecCrt, ecKey, err := certs.NewRootCA(certs.RootEtcd)
	if err != nil {
		f.Fatal(err)
	}

	for _, seed := range [][]byte{crt, key, ecCrt, ecKey, append(append([]byte{}, crt...), ecCrt...), []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), nil} {
		f.Add(seed)
	}

	f.Fuzz(func(_ *testing.T, data []byte) {
		if parsed, err := certs.ParseCertificates(data); err == nil {
			for _, c := range parsed {
				_ = certs.Fingerprint(c)
			}
		}

		_, _ = certs.ParseCertificate(data)

		if key, err := certs.ParsePrivateKey(data); err == nil {
			_, _ = certs.PublicKeyFingerprint(key.Public())
		}

		if pub, err := certs.ParsePublicKey(data); err == nil {
			_, _ = certs.PublicKeyFingerprint(pub)
		}

		_, _ = certs.PublicKeyPEM(data)
		_, _ = certs.LoadCA(data, data)
	})
}
