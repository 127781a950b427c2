package pki

import (
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// BenchmarkIssueLeaves is the pure cryptographic cost of issuing every certificate of a control
// plane, through the same profiles the controller uses: the floor for runtime.BenchmarkConfigUpdateReissue.
func BenchmarkIssueLeaves(b *testing.B) {
	doc := ctest.ControlPlane(ctest.NewSecrets(b))
	roots := rootSecrets(doc)
	addresses := []string{"10.5.0.2", "2001:db8::2"}

	sans := map[resource.ID]pki.CertSANSpec{}
	for id, spec := range certSANs(doc, addresses, "node-1") {
		sans[id] = spec
	}

	leaves := planLeaves(true, roots, nodeIdentity{hostname: "node-1", addresses: addresses, sans: sans}, nil)
	require.Len(b, leaves, 9)

	cas := map[resource.ID]*certs.CA{}

	for id, root := range roots {
		if id == pki.RootServiceAccount {
			continue
		}

		ca, err := certs.LoadCA([]byte(root.IssuingCert), []byte(root.IssuingKey))
		require.NoError(b, err)

		cas[id] = ca
	}

	now := time.Now()

	b.ReportAllocs()

	for b.Loop() {
		for _, leaf := range leaves {
			if _, _, err := cas[leaf.root].Issue(leaf.profile, now); err != nil {
				b.Fatal(err)
			}
		}
	}

	b.ReportMetric(float64(len(leaves)), "certs/op")
}
