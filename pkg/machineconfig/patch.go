package machineconfig

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"go.yaml.in/yaml/v4"
)

// patchDirective is the key of Talos's (and Kubernetes') strategic-merge directives; only
// "$patch: delete" is supported.
const patchDirective = "$patch"

// Patch is a loaded config patch: a strategic merge patch (partial documents) or an RFC 6902 JSON
// patch. Build one with LoadPatch.
type Patch struct {
	strategic []*yaml.Node // document nodes, for a strategic merge patch
	json      jsonpatch.Patch
}

// IsJSONPatch reports whether the patch is an RFC 6902 JSON patch.
func (p Patch) IsJSONPatch() bool {
	return p.json != nil
}

// LoadPatch parses a patch as Talos does: a JSON array, or a YAML block list, of operations is an
// RFC 6902 JSON patch; anything else is a strategic merge patch (one or more partial documents).
// Input starting with '[' must be valid JSON, so that a JSON typo is reported rather than read as
// YAML with a silently null value.
func LoadPatch(data []byte) (Patch, error) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return Patch{}, errors.New("the patch is empty")
	}

	if trimmed[0] == '[' {
		return decodeJSONPatch(trimmed)
	}

	docs, err := parseDocuments(trimmed)
	if errors.Is(err, errNoDocuments) {
		return Patch{}, errors.New("the patch is empty")
	}

	if err != nil {
		return Patch{}, fmt.Errorf("invalid patch: %w", err)
	}

	if len(docs) == 1 && docs[0].Content[0].Kind == yaml.SequenceNode {
		return yamlJSONPatch(docs[0].Content[0])
	}

	for i, d := range docs {
		if d.Content[0].Kind != yaml.MappingNode {
			return Patch{}, fmt.Errorf("invalid patch: document %d (line %d) is a %s: a strategic merge patch is a partial config (a mapping), a JSON patch is a list of operations", i+1, d.Line, kindName(d.Content[0]))
		}

		if err := checkDirectives(d.Content[0], ""); err != nil {
			return Patch{}, fmt.Errorf("invalid patch: %w", err)
		}
	}

	return Patch{strategic: docs}, nil
}

// LoadPatches loads each argument as a patch: "@path" reads the file at path, anything else is the
// patch text itself.
func LoadPatches(args []string) ([]Patch, error) {
	patches := make([]Patch, 0, len(args))

	for i, arg := range args {
		data := []byte(arg)
		name := fmt.Sprintf("patch %d (inline)", i+1)

		if path, isFile := strings.CutPrefix(arg, "@"); isFile {
			var err error

			data, err = os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("error reading patch file: %w", err)
			}

			name = fmt.Sprintf("patch file %q", path)
		}

		p, err := LoadPatch(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}

		patches = append(patches, p)
	}

	return patches, nil
}

// Apply applies the patches in order and returns the patched config (not validated: call Validate).
// cfg is not modified.
func Apply(cfg *Config, patches ...Patch) (*Config, error) {
	docs := cloneDocuments(cfg.docs)

	for i, p := range patches {
		var err error

		if p.IsJSONPatch() {
			docs, err = applyJSONPatch(docs, p.json)
		} else {
			docs, err = applyStrategic(docs, p.strategic)
		}

		if err != nil {
			return nil, fmt.Errorf("patch %d: %w", i+1, err)
		}
	}

	// Re-read the result so that the typed view is decoded (and checked) exactly as from a file.
	data, err := encodeDocuments(docs)
	if err != nil {
		return nil, err
	}

	patched, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("patched config: %w", err)
	}

	return patched, nil
}

// checkDirectives refuses any "$patch" other than "delete" before anything is applied.
func checkDirectives(n *yaml.Node, path string) error {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, value := n.Content[i], n.Content[i+1]
			if key.Value == patchDirective && (value.Kind != yaml.ScalarNode || value.Value != "delete") {
				return fmt.Errorf("%s: unsupported %s directive (line %d): only `$patch: delete` is supported", displayPath(path), patchDirective, key.Line)
			}

			if err := checkDirectives(value, joinPath(path, key.Value)); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for i, e := range n.Content {
			if err := checkDirectives(e, indexPath(path, i)); err != nil {
				return err
			}
		}
	}

	return nil
}

// isDelete reports whether n is a mapping carrying "$patch: delete".
func isDelete(n *yaml.Node) bool {
	v := mappingValue(n, patchDirective)

	return v != nil && v.Kind == yaml.ScalarNode && v.Value == "delete"
}

// applyStrategic merges each patch document into the config document with the same identity
// (apiVersion/kind/name; the v1alpha1 document has no kind), appends it when there is none, and
// deletes the document when the patch document says "$patch: delete".
func applyStrategic(docs, patchDocs []*yaml.Node) ([]*yaml.Node, error) {
	for _, patchDoc := range patchDocs {
		src := patchDoc.Content[0]
		id := documentID(src)

		target := -1

		for i, d := range docs {
			if documentID(d.Content[0]) == id {
				target = i

				break
			}
		}

		switch {
		case isDelete(src):
			if id == Version {
				return nil, errors.New("the v1alpha1 document cannot be deleted: delete fields of it instead")
			}

			if target < 0 {
				return nil, fmt.Errorf("%s: nothing to delete: the config has no such document", id)
			}

			docs = append(docs[:target:target], docs[target+1:]...)
		case target >= 0:
			if err := mergeMapping(docs[target].Content[0], src, documentPathPrefix(id)); err != nil {
				return nil, err
			}
		default:
			root := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
			if err := mergeMapping(root, src, documentPathPrefix(id)); err != nil {
				return nil, err
			}

			docs = append(docs, &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{root}})
		}
	}

	return docs, nil
}

// documentID names a document as Talos matches them: apiVersion/kind[/name], or v1alpha1.
func documentID(root *yaml.Node) string {
	if isV1Alpha1(root) {
		return Version
	}

	id := scalarValue(root, "apiVersion") + "/" + scalarValue(root, "kind")
	if name := scalarValue(root, "name"); name != "" {
		id += "/" + name
	}

	return id
}

// documentPathPrefix roots the paths in errors: v1alpha1 paths are plain (machine.ca.key), others
// name their document first.
func documentPathPrefix(id string) string {
	if id == Version {
		return ""
	}

	return "(" + id + ")"
}

func scalarValue(n *yaml.Node, key string) string {
	if v := mappingValue(n, key); v != nil && v.Kind == yaml.ScalarNode {
		return v.Value
	}

	return ""
}

// mergeMapping merges src into dst: keys merge recursively, scalars replace, lists append, and a
// value carrying "$patch: delete" deletes the key.
func mergeMapping(dst, src *yaml.Node, path string) error {
	for i := 0; i+1 < len(src.Content); i += 2 {
		key, value := src.Content[i], src.Content[i+1]
		if key.Value == patchDirective {
			continue
		}

		keyPath := joinPath(path, key.Value)
		at := mappingIndex(dst, key.Value)

		if isDelete(value) {
			if at < 0 {
				return fmt.Errorf("%s: nothing to delete: the key is not in the config", keyPath)
			}

			dst.Content = append(dst.Content[:at:at], dst.Content[at+2:]...)

			continue
		}

		if at < 0 {
			merged, err := mergeValue(nil, value, keyPath)
			if err != nil {
				return err
			}

			dst.Content = append(dst.Content, fromPatch(key), merged)

			continue
		}

		merged, err := mergeValue(dst.Content[at+1], value, keyPath)
		if err != nil {
			return err
		}

		dst.Content[at+1] = merged
	}

	return nil
}

// mergeValue returns the merge of src into dst (dst may be nil: src is new).
func mergeValue(dst, src *yaml.Node, path string) (*yaml.Node, error) {
	// Anchors of a patch mean nothing in the config: merge what an alias stands for.
	if src.Kind == yaml.AliasNode && src.Alias != nil {
		src = src.Alias
	}

	switch src.Kind {
	case yaml.MappingNode:
		if dst == nil || dst.Kind != yaml.MappingNode {
			dst = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}

		// An empty `{}` in the config would otherwise stay in flow style once it has content.
		dst.Style &^= yaml.FlowStyle

		return dst, mergeMapping(dst, src, path)
	case yaml.SequenceNode:
		if dst == nil || dst.Kind != yaml.SequenceNode {
			dst = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		}

		dst.Style &^= yaml.FlowStyle

		return dst, mergeSequence(dst, src, path)
	default:
		return fromPatch(src), nil
	}
}

// fromPatch copies a scalar of a patch for the config. Quoting and flow style are
// dropped, since they come from how the patch was written (e.g. as JSON); the encoder still quotes
// what needs it. Block scalars (| and >) keep their style.
func fromPatch(n *yaml.Node) *yaml.Node {
	c := cloneNode(n)
	c.Style &^= yaml.DoubleQuotedStyle | yaml.SingleQuotedStyle | yaml.FlowStyle
	c.Anchor = ""

	return c
}

// mergeSequence appends src's elements to dst; an element carrying "$patch: delete" instead deletes
// the elements of dst that have all its other fields with the same values.
func mergeSequence(dst, src *yaml.Node, path string) error {
	for i, e := range src.Content {
		elementPath := indexPath(path, i)

		if !isDelete(e) {
			merged, err := mergeValue(nil, e, elementPath)
			if err != nil {
				return err
			}

			dst.Content = append(dst.Content, merged)

			continue
		}

		selector, err := decodeSelector(e, elementPath)
		if err != nil {
			return err
		}

		kept := dst.Content[:0:0]

		for _, existing := range dst.Content {
			if !matchesSelector(existing, selector) {
				kept = append(kept, existing)
			}
		}

		if len(kept) == len(dst.Content) {
			return fmt.Errorf("%s: nothing to delete: no element of %s matches the fields given with $patch: delete", elementPath, path)
		}

		dst.Content = kept
	}

	return nil
}

// decodeSelector is the fields of a list element that says "$patch: delete".
func decodeSelector(e *yaml.Node, path string) (map[string]any, error) {
	selector := map[string]any{}

	for i := 0; i+1 < len(e.Content); i += 2 {
		key := e.Content[i].Value
		if key == patchDirective {
			continue
		}

		var value any
		if err := e.Content[i+1].Decode(&value); err != nil {
			return nil, fmt.Errorf("%s.%s: %w", path, key, err)
		}

		selector[key] = value
	}

	if len(selector) == 0 {
		return nil, fmt.Errorf("%s: `$patch: delete` in a list needs the fields of the element to delete (e.g. crt: ...)", path)
	}

	return selector, nil
}

func matchesSelector(n *yaml.Node, selector map[string]any) bool {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}

	if n.Kind != yaml.MappingNode {
		return false
	}

	for key, want := range selector {
		value := mappingValue(n, key)
		if value == nil {
			return false
		}

		var got any
		if err := value.Decode(&got); err != nil || !reflect.DeepEqual(got, want) {
			return false
		}
	}

	return true
}
