package bundle

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// Load reads and parses a secrets.yaml file; see Parse.
func Load(path string) (*Bundle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading secrets bundle: %w", err)
	}

	b, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}

	return b, nil
}

// Parse decodes a secrets.yaml document and validates it. Decoding is strict: an unknown key
// (a typo would otherwise silently drop a root), a value of the wrong shape or bad base64 is
// reported with its field path, together with every problem Validate finds, in one
// *ValidationError.
func Parse(data []byte) (*Bundle, error) {
	return parseAt(data, time.Now())
}

func parseAt(data []byte, now time.Time) (*Bundle, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, errors.New("secrets bundle is empty: generate one with `nodepkictl gen secrets`")
	}

	var doc yaml.Node
	if err := yaml.Load(data, &doc); err != nil {
		return nil, fmt.Errorf("secrets bundle is not valid YAML: %w", err)
	}

	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}

	if root.Kind != yaml.MappingNode {
		return nil, errors.New("secrets bundle must be a YAML mapping with keys cluster, secrets, trustdinfo and certs")
	}

	w := &shapeChecker{}
	w.check("", root, reflect.TypeFor[Bundle]())

	var b Bundle
	if err := root.Decode(&b); err != nil {
		return nil, fmt.Errorf("decoding secrets bundle: %w", err)
	}

	all := w.problems
	for _, p := range b.validateAt(now) {
		if !w.coversField(p.Field) {
			all = append(all, p)
		}
	}

	if err := all.err(); err != nil {
		return nil, err
	}

	return &b, nil
}

// shapeChecker walks the YAML tree against the Go type it will be decoded into and reports
// what the decoder would either reject without naming the field or silently accept: unknown
// and duplicate keys, values of the wrong kind and undecodable base64. Each bad value is
// replaced by null so that decoding succeeds and validation can report everything else.
type shapeChecker struct {
	problems problems
	blanked  []string
}

var pemType = reflect.TypeFor[machineconfig.PEM]()

func (c *shapeChecker) check(path string, node *yaml.Node, t reflect.Type) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}

	if node.Kind == yaml.ScalarNode && node.Tag == "!!null" {
		return
	}

	switch {
	case t == pemType:
		switch {
		case node.Kind != yaml.ScalarNode:
			c.reject(path, node, "want the base64 encoding of PEM text")
		case node.Value == machineconfig.Redacted:
			c.reject(path, node, "value is redacted (******): use the original secrets.yaml, not a redacted copy")
		default:
			if _, err := base64.StdEncoding.DecodeString(node.Value); err != nil {
				c.reject(path, node, "not valid base64: want the standard base64 encoding of PEM text")
			}
		}
	case t.Kind() == reflect.String:
		if node.Kind != yaml.ScalarNode {
			c.reject(path, node, "want a string")
		}
	case t.Kind() == reflect.Struct:
		if node.Kind != yaml.MappingNode {
			c.reject(path, node, "want a mapping with keys "+strings.Join(yamlKeys(t), ", "))

			return
		}

		c.checkMapping(path, node, t)
	}
}

func (c *shapeChecker) checkMapping(path string, node *yaml.Node, t reflect.Type) {
	fields := map[string]reflect.Type{}

	for f := range t.Fields() {
		if name := yamlKey(f); name != "" {
			fields[name] = f.Type
		}
	}

	seen := map[string]bool{}
	kept := node.Content[:0]

	for i := 0; i+1 < len(node.Content); i += 2 {
		key, value := node.Content[i], node.Content[i+1]
		fieldPath := join(path, key.Value)

		fieldType, known := fields[key.Value]

		switch {
		case !known:
			c.problems.add(fieldPath, "unknown field (line %d): known fields here are %s", key.Line, strings.Join(yamlKeys(t), ", "))
		case seen[key.Value]:
			c.problems.add(fieldPath, "duplicate key (line %d)", key.Line)
		default:
			seen[key.Value] = true

			c.check(fieldPath, value, fieldType)

			kept = append(kept, key, value)
		}
	}

	node.Content = kept
}

func (c *shapeChecker) reject(path string, node *yaml.Node, message string) {
	c.problems.add(path, "%s (line %d)", message, node.Line)
	c.blanked = append(c.blanked, path)

	*node = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: node.Line, Column: node.Column}
}

// coversField reports whether field was already reported as a bad value (or lies under one).
func (c *shapeChecker) coversField(field string) bool {
	return slices.ContainsFunc(c.blanked, func(b string) bool {
		return field == b || strings.HasPrefix(field, b+".")
	})
}

func join(path, key string) string {
	if path == "" {
		return key
	}

	return path + "." + key
}

func yamlKey(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}

	if name == "" {
		return strings.ToLower(f.Name)
	}

	return name
}

func yamlKeys(t reflect.Type) []string {
	var out []string

	for f := range t.Fields() {
		if name := yamlKey(f); name != "" {
			out = append(out, name)
		}
	}

	return out
}

// Marshal encodes the bundle as secrets.yaml, in Talos's layout (4-space indent).
func (b *Bundle) Marshal() ([]byte, error) {
	out, err := yaml.Dump(b, yaml.V3)
	if err != nil {
		return nil, fmt.Errorf("encoding secrets bundle: %w", err)
	}

	return out, nil
}

// WriteFile validates the bundle and writes it to path atomically with mode 0600. It refuses
// to replace an existing file unless force is set; an invalid bundle writes nothing.
func (b *Bundle) WriteFile(path string, force bool) error {
	if err := b.Validate(); err != nil {
		return err
	}

	data, err := b.Marshal()
	if err != nil {
		return err
	}

	if !force {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("file %q already exists, use --force to overwrite", path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("checking %q: %w", path, err)
		}
	}

	return atomicfile.WriteFile(path, data)
}
