package machineconfig_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
)

// testCluster is one generated cluster shared by the tests (key generation is the slow part).
type testCluster struct {
	bundle       *bundle.Bundle
	controlPlane []byte
	worker       []byte
	leafCrt      []byte // a leaf (non-CA) certificate signed by the OS CA
	otherCA      []byte // a CA certificate that is not in the bundle
}

var sharedCluster = sync.OnceValues(func() (*testCluster, error) {
	b, err := bundle.Generate()
	if err != nil {
		return nil, err
	}

	cp, w, err := generate.Generate(generate.Input{ClusterName: "test", Endpoint: "https://cp.test:6443", Bundle: b})
	if err != nil {
		return nil, err
	}

	cpBytes, err := cp.Bytes()
	if err != nil {
		return nil, err
	}

	wBytes, err := w.Bytes()
	if err != nil {
		return nil, err
	}

	ca, err := certs.LoadCA(b.Certs.OS.Crt, b.Certs.OS.Key)
	if err != nil {
		return nil, err
	}

	leaf, _, err := ca.Issue(certs.ClientProfile([]string{"os:admin"}, time.Hour), time.Now())
	if err != nil {
		return nil, err
	}

	otherCA, _, err := certs.NewRootCA(certs.RootOS)
	if err != nil {
		return nil, err
	}

	return &testCluster{bundle: b, controlPlane: cpBytes, worker: wBytes, leafCrt: leaf, otherCA: otherCA}, nil
})

func cluster(t *testing.T) *testCluster {
	t.Helper()

	c, err := sharedCluster()
	require.NoError(t, err)

	return c
}

// secrets are strings that must never appear in an error or a redacted config.
func (c *testCluster) secrets() []string {
	b := c.bundle

	out := []string{b.Cluster.Secret, b.Secrets.BootstrapToken, b.TrustdInfo.Token, b.Secrets.SecretboxEncryptionSecret}
	for _, key := range [][]byte{b.Certs.OS.Key, b.Certs.K8s.Key, b.Certs.K8sAggregator.Key, b.Certs.Etcd.Key, b.Certs.K8sServiceAccount.Key} {
		out = append(out, string(key), b64(key))
	}

	return out
}

func b64(data []byte) string {
	return base64.StdEncoding.EncodeToString(data)
}

// decode is a YAML document as plain Go values, for comparisons that ignore layout.
func decode(t *testing.T, data []byte) any {
	t.Helper()

	var v any
	require.NoError(t, yaml.Unmarshal(data, &v))

	return v
}

// edit decodes a single-document config, lets fn change it, and encodes it again.
func edit(t *testing.T, data []byte, fn func(doc map[string]any)) []byte {
	t.Helper()

	var doc map[string]any
	require.NoError(t, yaml.Unmarshal(data, &doc))

	fn(doc)

	out, err := yaml.Marshal(doc)
	require.NoError(t, err)

	return out
}

// section walks doc along keys, returning the mapping at the end.
func section(doc map[string]any, keys ...string) map[string]any {
	m := doc
	for _, k := range keys {
		m = m[k].(map[string]any)
	}

	return m
}

func mustParse(t *testing.T, data []byte) *machineconfig.Config {
	t.Helper()

	cfg, err := machineconfig.Parse(data)
	require.NoError(t, err)

	return cfg
}

func mustBytes(t *testing.T, cfg *machineconfig.Config) []byte {
	t.Helper()

	data, err := cfg.Bytes()
	require.NoError(t, err)

	return data
}

// decodeAll is every document of a YAML stream as plain Go values.
func decodeAll(t *testing.T, data []byte) []any {
	t.Helper()

	dec := yaml.NewDecoder(bytes.NewReader(data))

	var docs []any

	for {
		var v any

		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return docs
		}

		require.NoError(t, err)

		docs = append(docs, v)
	}
}

func containsOnce(s, sub string) bool {
	return strings.Count(s, sub) == 1
}

func replaceOnce(s, old, replacement string) string {
	return strings.Replace(s, old, replacement, 1)
}
