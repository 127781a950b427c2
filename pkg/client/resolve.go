package client

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
)

// ResolveResourceKind finds the resource definition a user means by word: its ID (the lower-case
// full type) or any of its aliases, compared case-insensitively, as talosctl does. namespace is
// returned unchanged when set, else the definition's default namespace. An unknown word is an
// *UnknownResourceError, a word matching several types an *AmbiguousResourceError.
func ResolveResourceKind(ctx context.Context, st state.CoreState, word string, namespace resource.Namespace) (*meta.ResourceDefinition, resource.Namespace, error) {
	definitions, err := safe.StateListAll[*meta.ResourceDefinition](ctx, st)
	if err != nil {
		return nil, "", fmt.Errorf("listing resource definitions: %w", err)
	}

	var matches []*meta.ResourceDefinition

	for rd := range definitions.All() {
		if strings.EqualFold(rd.Metadata().ID(), word) ||
			slices.ContainsFunc(rd.TypedSpec().AllAliases, func(alias resource.Type) bool { return strings.EqualFold(alias, word) }) {
			matches = append(matches, rd)
		}
	}

	switch len(matches) {
	case 0:
		return nil, "", &UnknownResourceError{Word: word}
	case 1:
	default:
		candidates := make([]string, 0, len(matches))
		for _, rd := range matches {
			candidates = append(candidates, rd.TypedSpec().Type)
		}

		slices.Sort(candidates)

		return nil, "", &AmbiguousResourceError{Word: word, Candidates: candidates}
	}

	if namespace == "" {
		namespace = matches[0].TypedSpec().DefaultNamespace
	}

	return matches[0], namespace, nil
}

// UnknownResourceError reports a word that names no registered resource type.
type UnknownResourceError struct {
	Word string
}

func (e *UnknownResourceError) Error() string {
	return fmt.Sprintf("resource %q is not registered", e.Word)
}

// AmbiguousResourceError reports a word that names several resource types.
type AmbiguousResourceError struct {
	Word       string
	Candidates []resource.Type
}

func (e *AmbiguousResourceError) Error() string {
	return fmt.Sprintf("resource type %q is ambiguous: [%s]", e.Word, strings.Join(e.Candidates, ", "))
}
