package bundle

import (
	"errors"
	"fmt"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/role"
)

// NewClientCertificate issues an API client certificate signed by the OS CA: O = the sorted
// roles, no CN, client-auth EKU only, valid for ttl (certs.ClientLifetime is Talos's default).
func (b *Bundle) NewClientCertificate(roles []string, ttl time.Duration) (crtPEM, keyPEM []byte, err error) {
	roles, err = role.Check(roles)
	if err != nil {
		return nil, nil, err
	}

	if ttl <= 0 {
		return nil, nil, fmt.Errorf("certificate lifetime must be positive, got %s", ttl)
	}

	if b.Certs == nil || b.Certs.OS == nil {
		return nil, nil, errors.New("certs.os: required field is missing: the bundle has no OS CA to sign with")
	}

	ca, err := certs.LoadCA(b.Certs.OS.Crt, b.Certs.OS.Key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs.os: %w", err)
	}

	crtPEM, keyPEM, err = ca.Issue(certs.ClientProfile(roles, ttl), time.Now())
	if err != nil {
		return nil, nil, fmt.Errorf("issuing client certificate: %w", err)
	}

	return crtPEM, keyPEM, nil
}
