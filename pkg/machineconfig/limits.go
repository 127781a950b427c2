package machineconfig

import (
	"fmt"

	"go.yaml.in/yaml/v4"
)

// Bounds of what a config or a patch may make the node build. A machine config is a few hundred
// YAML nodes; these leave room for large ones while keeping a hostile document (an alias cycle,
// an alias-expansion "billion laughs" bomb, a JSON patch that copies a subtree onto itself over
// and over) from exhausting the daemon's memory or stack.
const (
	// MaxExpandedNodes bounds the YAML nodes of one document with every alias expanded.
	MaxExpandedNodes = 100_000
	// MaxDepth bounds the nesting of mappings and lists in one document, aliases expanded.
	MaxDepth = 100
	// MaxJSONPatchOperations bounds the operations of one JSON patch.
	MaxJSONPatchOperations = 1000
	// MaxJSONPatchCopyBytes bounds the bytes one JSON patch may add with copy operations.
	MaxJSONPatchCopyBytes = 1 << 20
	// MaxConfigBytes bounds a config, as read and as patched (the node API takes at most 4 MiB).
	MaxConfigBytes = 4 << 20
)

func checkConfigSize(data []byte) error {
	if len(data) > MaxConfigBytes {
		return fmt.Errorf("the config is %d bytes, at most %d are allowed", len(data), MaxConfigBytes)
	}

	return nil
}

// checkExpansion refuses an alias cycle, and a document whose expansion (every alias replaced by
// what it stands for, as merging and JSON conversion do) exceeds MaxExpandedNodes or MaxDepth.
// Anchors and aliases within the bounds are accepted. Each node is measured once, so the check is
// linear in the document as written even when its expansion is exponential.
func checkExpansion(doc *yaml.Node) error {
	m := expansionMeter{measured: map[*yaml.Node]expansion{}, open: map[*yaml.Node]bool{}}

	size, err := m.measure(doc, "", 0)
	if err != nil {
		return err
	}

	if size.nodes > MaxExpandedNodes {
		return fmt.Errorf("the document expands to more than %d YAML nodes (aliases expanded): refusing it as an alias bomb", MaxExpandedNodes)
	}

	return nil
}

type expansion struct {
	nodes int // saturates just past MaxExpandedNodes
	depth int
}

type expansionMeter struct {
	measured map[*yaml.Node]expansion
	open     map[*yaml.Node]bool
}

func (m *expansionMeter) measure(n *yaml.Node, path string, depth int) (expansion, error) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}

	if size, ok := m.measured[n]; ok {
		if depth+size.depth > MaxDepth {
			return expansion{}, depthError(path)
		}

		return size, nil
	}

	if m.open[n] {
		return expansion{}, fmt.Errorf("%s: the alias refers to a node that contains it (line %d): alias cycles are not allowed", displayPath(path), n.Line)
	}

	if depth > MaxDepth {
		return expansion{}, depthError(path)
	}

	m.open[n] = true
	defer delete(m.open, n)

	size := expansion{nodes: 1}

	for i, child := range n.Content {
		childPath := path

		switch n.Kind {
		case yaml.MappingNode:
			if i%2 == 1 {
				childPath = joinPath(path, n.Content[i-1].Value)
			}
		case yaml.SequenceNode:
			childPath = indexPath(path, i)
		}

		c, err := m.measure(child, childPath, depth+1)
		if err != nil {
			return expansion{}, err
		}

		size.nodes = min(size.nodes+c.nodes, MaxExpandedNodes+1)
		size.depth = max(size.depth, c.depth+1)

		if size.nodes > MaxExpandedNodes {
			return expansion{}, fmt.Errorf("%s: expands to more than %d YAML nodes (aliases expanded): refusing it as an alias bomb", displayPath(path), MaxExpandedNodes)
		}
	}

	m.measured[n] = size

	return size, nil
}

func depthError(path string) error {
	return fmt.Errorf("%s: nested more than %d levels deep (aliases expanded)", displayPath(path), MaxDepth)
}
