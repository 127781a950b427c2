package certs

import "crypto/x509/pkix"

func pkixName(commonName string, organization []string) pkix.Name {
	return pkix.Name{CommonName: commonName, Organization: organization}
}
