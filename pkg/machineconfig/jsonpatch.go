package machineconfig

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"go.yaml.in/yaml/v4"
)

// decodeJSONPatch parses an RFC 6902 JSON patch and checks every operation up front, so a typo is
// reported when the patch is loaded rather than half-way through applying it.
func decodeJSONPatch(data []byte) (Patch, error) {
	var ops jsonpatch.Patch
	if err := json.Unmarshal(data, &ops); err != nil {
		return Patch{}, fmt.Errorf("invalid JSON patch: %w: want a list of operations like [{\"op\": \"add\", \"path\": \"/machine/certSANs/-\", \"value\": \"10.0.0.1\"}]", err)
	}

	if len(ops) == 0 {
		return Patch{}, errors.New("invalid JSON patch: the list of operations is empty")
	}

	if len(ops) > MaxJSONPatchOperations {
		return Patch{}, fmt.Errorf("invalid JSON patch: %d operations, at most %d are allowed: split it", len(ops), MaxJSONPatchOperations)
	}

	for i, op := range ops {
		if err := checkOperation(op); err != nil {
			return Patch{}, fmt.Errorf("invalid JSON patch: operation %d: %w", i+1, err)
		}
	}

	p, err := jsonpatch.DecodePatch(data)
	if err != nil {
		return Patch{}, fmt.Errorf("invalid JSON patch: %w", err)
	}

	return Patch{json: p}, nil
}

// yamlJSONPatch reads a JSON patch written as a YAML list of operations.
func yamlJSONPatch(list *yaml.Node) (Patch, error) {
	data, err := nodeToJSON(list)
	if err != nil {
		return Patch{}, fmt.Errorf("invalid JSON patch: %w", err)
	}

	return decodeJSONPatch(data)
}

func checkOperation(op jsonpatch.Operation) error {
	kind := op.Kind()

	path, err := op.Path()
	if err != nil {
		return fmt.Errorf("%q has no path: add \"path\": \"/machine/...\"", kind)
	}

	needs := func(field string) error {
		if _, ok := op[field]; !ok {
			return fmt.Errorf("%s %s: missing %q", kind, path, field)
		}

		return nil
	}

	switch kind {
	case "add", "replace", "test":
		return needs("value")
	case "move", "copy":
		return needs("from")
	case "remove":
		return nil
	default:
		return fmt.Errorf("unknown op %q at %s: use one of add, remove, replace, move, copy, test", kind, path)
	}
}

// applyJSONPatch applies a JSON patch to the v1alpha1 document through its JSON form, as Talos does.
func applyJSONPatch(docs []*yaml.Node, p jsonpatch.Patch) ([]*yaml.Node, error) {
	if len(docs) != 1 {
		return nil, errors.New("JSON patches (RFC 6902) are not supported for multi-document machine configs: use a strategic merge patch")
	}

	doc, err := nodeToJSON(docs[0].Content[0])
	if err != nil {
		return nil, err
	}

	options := jsonpatch.NewApplyOptions()
	options.AccumulatedCopySizeLimit = MaxJSONPatchCopyBytes

	patched, err := p.ApplyWithOptions(doc, options)
	if err != nil {
		return nil, fmt.Errorf("JSON patch: %w", err)
	}

	if err = checkConfigSize(patched); err != nil {
		return nil, fmt.Errorf("JSON patch: %w", err)
	}

	root, err := jsonToNode(patched)
	if err != nil {
		return nil, err
	}

	return []*yaml.Node{{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}}}, nil
}

// nodeToJSON encodes a YAML tree as JSON, keeping the key order (which the JSON patch library keeps
// too) so that a patched config reads like the original.
func nodeToJSON(n *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, n, ""); err != nil {
		return nil, err
	}

	return buf.Bytes(), nil
}

func writeJSON(buf *bytes.Buffer, n *yaml.Node, path string) error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}

	switch n.Kind {
	case yaml.MappingNode:
		buf.WriteByte('{')

		for i := 0; i+1 < len(n.Content); i += 2 {
			if i > 0 {
				buf.WriteByte(',')
			}

			key := n.Content[i].Value
			buf.WriteString(strconv.Quote(key))
			buf.WriteByte(':')

			if err := writeJSON(buf, n.Content[i+1], joinPath(path, key)); err != nil {
				return err
			}
		}

		buf.WriteByte('}')
	case yaml.SequenceNode:
		buf.WriteByte('[')

		for i, e := range n.Content {
			if i > 0 {
				buf.WriteByte(',')
			}

			if err := writeJSON(buf, e, indexPath(path, i)); err != nil {
				return err
			}
		}

		buf.WriteByte(']')
	default:
		var value any
		if err := n.Decode(&value); err != nil {
			return fmt.Errorf("%s: cannot be converted to JSON (line %d): %w", displayPath(path), n.Line, err)
		}

		data, err := json.Marshal(value)
		if err != nil {
			return fmt.Errorf("%s: cannot be converted to JSON (line %d): %w", displayPath(path), n.Line, err)
		}

		buf.Write(data)
	}

	return nil
}

// jsonToNode reads JSON (a subset of YAML) as a YAML tree in block style, as a config file is written.
func jsonToNode(data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("error reading the patched document: %w", err)
	}

	if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the JSON patch turned the document into something other than a mapping: patch fields, not the whole document")
	}

	root := doc.Content[0]
	blockStyle(root)

	return root, nil
}

// blockStyle drops JSON's flow style and quoting; the encoder still quotes strings that need it.
func blockStyle(n *yaml.Node) {
	n.Style = 0

	for _, c := range n.Content {
		blockStyle(c)
	}
}
