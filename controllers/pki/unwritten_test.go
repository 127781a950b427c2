package pki

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/nodepki/nodepki/resources/pki"
)

// TestUnwritten: a certificate obtained in a reconcile is given back to a retry of the same write
// (same request, not due), and to nothing else.
func TestUnwritten(t *testing.T) {
	t.Parallel()

	now := time.Now()
	spec := pki.NodeCertificateSpec{Certificate: "C", Key: "K", Request: "digest", RenewAt: pki.NewTime(now.Add(time.Hour))}

	var u unwritten

	_, ok := u.get("api", "digest", now)
	assert.False(t, ok, "nothing obtained yet")

	u.put("api", spec)

	got, ok := u.get("api", "digest", now)
	assert.True(t, ok)
	assert.Equal(t, spec, got)

	_, ok = u.get("api", "other request", now)
	assert.False(t, ok, "obtained for another request")

	_, ok = u.get("trustd", "digest", now)
	assert.False(t, ok, "obtained for another certificate")

	_, ok = u.get("api", "digest", now.Add(2*time.Hour))
	assert.False(t, ok, "due for renewal meanwhile")

	u.forget("api")

	_, ok = u.get("api", "digest", now)
	assert.False(t, ok, "the state has it")
}
