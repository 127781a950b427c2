package machineconfig

import (
	"encoding/base64"
	"fmt"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"
)

var (
	documentType = reflect.TypeFor[Document]()
	pemType      = reflect.TypeFor[PEM]()
	durationType = reflect.TypeFor[Duration]()
)

// checkFields walks the YAML tree along the typed view t and reports every field the typed decode
// would refuse, each with its path (the decoder itself only names a line). Fields not in the typed
// view are not looked at: they belong to the rest of the OS.
func checkFields(n *yaml.Node, t reflect.Type, path string, errs []error) []error {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}

	if isNull(n) {
		return errs
	}

	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}

	switch {
	case t == pemType:
		return checkPEM(n, path, errs)
	case t == durationType:
		return checkDuration(n, path, errs)
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return append(errs, fmt.Errorf("%s: want a mapping of fields (line %d), got a %s", displayPath(path), n.Line, kindName(n)))
		}

		for i := range t.NumField() {
			field := t.Field(i)

			name, _, _ := strings.Cut(field.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}

			if value := mappingValue(n, name); value != nil {
				errs = checkFields(value, field.Type, joinPath(path, name), errs)
			}
		}

		return errs
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return append(errs, fmt.Errorf("%s: want a list (line %d), got a %s", displayPath(path), n.Line, kindName(n)))
		}

		for i, e := range n.Content {
			errs = checkFields(e, t.Elem(), indexPath(path, i), errs)
		}

		return errs
	default:
		if err := n.Decode(reflect.New(t).Interface()); err != nil {
			return append(errs, fmt.Errorf("%s: want a %s (line %d), got a %s", displayPath(path), t.Kind(), n.Line, kindName(n)))
		}

		return errs
	}
}

func checkPEM(n *yaml.Node, path string, errs []error) []error {
	if n.Kind != yaml.ScalarNode {
		return append(errs, fmt.Errorf("%s: want a base64-encoded PEM string (line %d), got a %s", path, n.Line, kindName(n)))
	}

	if n.Value == Redacted {
		return errs
	}

	if _, err := base64.StdEncoding.DecodeString(n.Value); err != nil {
		return append(errs, fmt.Errorf("%s: not valid base64 (line %d): %w: the field holds the standard base64 encoding of the PEM text (e.g. `base64 -w0 ca.crt`)", path, n.Line, err))
	}

	return errs
}

func checkDuration(n *yaml.Node, path string, errs []error) []error {
	if n.Kind != yaml.ScalarNode {
		return append(errs, fmt.Errorf("%s: want a duration such as 8760h (line %d), got a %s", path, n.Line, kindName(n)))
	}

	d, err := time.ParseDuration(n.Value)
	if err != nil {
		return append(errs, fmt.Errorf("%s: %q is not a duration (line %d): write it as hours, minutes and seconds, e.g. 8760h or 720h30m", path, n.Value, n.Line))
	}

	if d < 0 {
		return append(errs, fmt.Errorf("%s: %q is negative (line %d): write a positive duration, e.g. 8760h", path, n.Value, n.Line))
	}

	return errs
}

func displayPath(path string) string {
	if path == "" {
		return "document"
	}

	return path
}
