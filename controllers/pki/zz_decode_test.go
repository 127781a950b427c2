package pki

import (
	"testing"

	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/controllers/ctest"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

func BenchmarkZZDecode(b *testing.B) {
	s := ctest.NewSecrets(b)
	doc := ctest.ControlPlane(s)
	doc.Machine.AcceptedCAs = []*machineconfig.Certificate{ctest.NewCA(b, "os").Accepted()}
	doc.Cluster.AcceptedCAs = []*machineconfig.Certificate{ctest.NewCA(b, "kubernetes").Accepted()}
	doc.Cluster.Etcd.AcceptedCAs = []*machineconfig.Certificate{ctest.NewCA(b, "etcd").Accepted()}
	doc.Cluster.AcceptedAggregatorCAs = []*machineconfig.Certificate{ctest.NewCA(b, "aggregator").Accepted()}
	raw := ctest.Marshal(b, doc)
	b.Logf("size %d", len(raw))
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeMachineConfig(raw); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("unmarshal", func(b *testing.B) {
		for b.Loop() {
			var d machineconfig.Document
			if err := yaml.Unmarshal(raw, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("rootsecrets+accepted", func(b *testing.B) {
		d, _ := decodeMachineConfig(raw)
		for b.Loop() {
			rootSecrets(d)
			acceptedCAs(d)
		}
	})
}
