// Package machineconfig owns the machine config document (Talos v1alpha1 layout, with nodepki's
// additions): parsing that keeps every field nodepki does not know, the typed view of the PKI fields,
// validation, redaction, diffs and config patches (strategic merge and RFC 6902 JSON patch).
package machineconfig

import (
	"bytes"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"go.yaml.in/yaml/v4"
)

// Version is the version of the machine config document nodepki reads.
const Version = "v1alpha1"

// Config is a parsed machine config: every document of the file as a YAML tree (so unknown fields
// and key order survive load, patch and save) plus the typed view of the v1alpha1 document.
//
// A Config is never modified in place: Apply returns a new one.
type Config struct {
	docs []*yaml.Node // yaml.DocumentNode each
	v1   int          // index of the v1alpha1 document in docs
	doc  *Document
}

// Parse parses a machine config file. Other documents (kind: ...) are kept as they are; exactly one
// v1alpha1 document (`version: v1alpha1`, no kind) is required and decoded into the typed view.
func Parse(data []byte) (*Config, error) {
	if err := checkConfigSize(data); err != nil {
		return nil, err
	}

	docs, err := parseDocuments(data)
	if errors.Is(err, errNoDocuments) {
		return nil, errors.New("the config is empty: want a YAML document with version: v1alpha1")
	}

	if err != nil {
		return nil, err
	}

	return newConfig(docs)
}

func newConfig(docs []*yaml.Node) (*Config, error) {
	v1 := -1

	for i, d := range docs {
		if d.Content[0].Kind != yaml.MappingNode {
			return nil, fmt.Errorf("document %d (line %d): want a mapping of fields, got a %s", i+1, d.Line, kindName(d.Content[0]))
		}

		if !isV1Alpha1(d.Content[0]) {
			continue
		}

		if v1 >= 0 {
			return nil, fmt.Errorf("document %d (line %d): a second v1alpha1 document (documents without kind): keep a single one", i+1, d.Line)
		}

		v1 = i
	}

	if v1 < 0 {
		return nil, errors.New("no v1alpha1 document: the config needs a document with `version: v1alpha1` and no kind")
	}

	root := docs[v1].Content[0]

	if errs := checkFields(root, documentType, "", nil); len(errs) > 0 {
		return nil, fmt.Errorf("invalid v1alpha1 document: %w", errors.Join(errs...))
	}

	doc := &Document{}
	if err := root.Decode(doc); err != nil {
		return nil, fmt.Errorf("invalid v1alpha1 document: %w", err)
	}

	return &Config{docs: docs, v1: v1, doc: doc}, nil
}

// errNoDocuments is returned by parseDocuments for input that holds only comments or nothing.
var errNoDocuments = errors.New("no YAML document found")

// parseDocuments reads every non-empty YAML document of data.
func parseDocuments(data []byte) ([]*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))

	var docs []*yaml.Node

	for {
		doc := &yaml.Node{}

		err := dec.Decode(doc)
		if errors.Is(err, io.EOF) {
			break
		}

		if err != nil {
			return nil, fmt.Errorf("invalid YAML: %w", err)
		}

		if len(doc.Content) == 0 || isNull(doc.Content[0]) {
			continue
		}

		if err := checkExpansion(doc.Content[0]); err != nil {
			return nil, err
		}

		if err := checkDuplicateKeys(doc.Content[0], ""); err != nil {
			return nil, err
		}

		docs = append(docs, doc)
	}

	if len(docs) == 0 {
		return nil, errNoDocuments
	}

	return docs, nil
}

// checkDuplicateKeys refuses a mapping that names a key twice: the YAML decoder would silently keep
// the last one, and a reader of the file may believe the first.
func checkDuplicateKeys(n *yaml.Node, path string) error {
	switch n.Kind {
	case yaml.MappingNode:
		seen := map[string]int{}

		for i := 0; i+1 < len(n.Content); i += 2 {
			key := n.Content[i]
			if line, dup := seen[key.Value]; dup {
				return fmt.Errorf("%s: key defined twice (lines %d and %d): keep one", joinPath(path, key.Value), line, key.Line)
			}

			seen[key.Value] = key.Line

			if err := checkDuplicateKeys(n.Content[i+1], joinPath(path, key.Value)); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			if err := checkDuplicateKeys(e, indexPath(path, i)); err != nil {
				return err
			}
		}
	}

	return nil
}

// Document is the typed view of the v1alpha1 document. It is shared: do not modify it; change a
// config with Apply.
func (c *Config) Document() *Document {
	return c.doc
}

// IsControlPlane reports whether the machine is a control-plane (or init) node.
func (c *Config) IsControlPlane() bool {
	return c.doc.Machine.IsControlPlane()
}

// Bytes encodes the config (every document, in order) as YAML with Talos's 4-space indent.
func (c *Config) Bytes() ([]byte, error) {
	return encodeDocuments(c.docs)
}

// Redacted encodes the config with secrets replaced by "******", for diffs and logs: the known
// secret fields of the v1alpha1 document (keys, tokens, cluster.secret, encryption secrets, as
// Talos's Redact does), and every private key anywhere in any document, known field or not,
// recognized by its content (PEM, or base64 of PEM).
func (c *Config) Redacted() ([]byte, error) {
	docs := cloneDocuments(c.docs)
	root := docs[c.v1].Content[0]

	for _, path := range redactedPaths {
		redact(root, path)
	}

	for _, d := range docs {
		redactPrivateKeys(d)
	}

	return encodeDocuments(docs)
}

// redactPrivateKeys replaces every scalar holding a private key. Aliases are not followed (their
// targets are shared with the original tree, see cloneNode): an anchored node is redacted where
// it is defined, and the encoder writes the alias, not the value.
func redactPrivateKeys(n *yaml.Node) {
	if n.Kind == yaml.ScalarNode && holdsPrivateKey(n.Value) {
		*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: Redacted}

		return
	}

	for _, c := range n.Content {
		redactPrivateKeys(c)
	}
}

// holdsPrivateKey reports whether a value is, or is the base64 of, a PEM private key.
func holdsPrivateKey(value string) bool {
	if isPrivateKeyPEM([]byte(value)) {
		return true
	}

	decoded, err := base64.StdEncoding.DecodeString(strings.TrimSpace(value))

	return err == nil && isPrivateKeyPEM(decoded)
}

func isPrivateKeyPEM(data []byte) bool {
	for {
		var block *pem.Block

		block, data = pem.Decode(data)
		if block == nil {
			return false
		}

		if strings.Contains(block.Type, "PRIVATE KEY") {
			return true
		}
	}
}

// redactedPaths are the secrets of the v1alpha1 document: Talos's list plus nodepki's accepted
// join tokens and accepted service-account keys (which may be private keys).
var redactedPaths = [][]string{
	{"machine", "token"},
	{"machine", "acceptedTokens", "*"},
	{"machine", "ca", "key"},
	{"cluster", "secret"},
	{"cluster", "token"},
	{"cluster", "secretboxEncryptionSecret"},
	{"cluster", "aescbcEncryptionSecret"},
	{"cluster", "serviceAccount", "key"},
	{"cluster", "acceptedServiceAccountKeys", "*", "key"},
	{"cluster", "ca", "key"},
	{"cluster", "aggregatorCA", "key"},
	{"cluster", "etcd", "ca", "key"},
}

// redact replaces the non-empty scalars at path ("*" matches every list element) with Redacted.
func redact(n *yaml.Node, path []string) {
	if n == nil {
		return
	}

	if len(path) == 0 {
		if n.Kind == yaml.ScalarNode && n.Value != "" && !isNull(n) {
			*n = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: Redacted}
		}

		return
	}

	if path[0] == "*" {
		if n.Kind == yaml.SequenceNode {
			for _, e := range n.Content {
				redact(e, path[1:])
			}
		}

		return
	}

	redact(mappingValue(n, path[0]), path[1:])
}

// Diff is a unified line diff of the redacted forms of two configs; empty when they are equal.
func Diff(oldConfig, newConfig *Config) (string, error) {
	a, err := oldConfig.Redacted()
	if err != nil {
		return "", err
	}

	b, err := newConfig.Redacted()
	if err != nil {
		return "", err
	}

	diff, err := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A:        difflib.SplitLines(string(a)),
		B:        difflib.SplitLines(string(b)),
		FromFile: "old",
		ToFile:   "new",
		Context:  3,
	})
	if err != nil {
		return "", fmt.Errorf("error computing config diff: %w", err)
	}

	return diff, nil
}

func encodeDocuments(docs []*yaml.Node) ([]byte, error) {
	var buf bytes.Buffer

	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(4)

	for _, d := range docs {
		if err := enc.Encode(d); err != nil {
			return nil, fmt.Errorf("error encoding machine config: %w", err)
		}
	}

	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("error encoding machine config: %w", err)
	}

	return buf.Bytes(), nil
}

// isV1Alpha1 tells the v1alpha1 document from the others (which all carry a kind).
func isV1Alpha1(root *yaml.Node) bool {
	return mappingValue(root, "kind") == nil
}

// mappingValue is the value of key in mapping n, or nil.
func mappingValue(n *yaml.Node, key string) *yaml.Node {
	if i := mappingIndex(n, key); i >= 0 {
		return n.Content[i+1]
	}

	return nil
}

// mappingIndex is the index in n.Content of key in mapping n, or -1.
func mappingIndex(n *yaml.Node, key string) int {
	if n == nil || n.Kind != yaml.MappingNode {
		return -1
	}

	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return i
		}
	}

	return -1
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func cloneDocuments(docs []*yaml.Node) []*yaml.Node {
	out := make([]*yaml.Node, len(docs))
	for i, d := range docs {
		out[i] = cloneNode(d)
	}

	return out
}

// cloneNode deep-copies a YAML tree. Alias targets are shared: they are read, never written.
func cloneNode(n *yaml.Node) *yaml.Node {
	c := *n
	if n.Content != nil {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, child := range n.Content {
			c.Content[i] = cloneNode(child)
		}
	}

	return &c
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	case yaml.AliasNode:
		return "alias"
	case yaml.DocumentNode:
		return "document"
	default:
		if isNull(n) {
			return "null"
		}

		return "scalar (" + strings.TrimPrefix(n.ShortTag(), "!!") + ")"
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}

	return path + "." + key
}

func indexPath(path string, i int) string {
	return fmt.Sprintf("%s[%d]", path, i)
}
