package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/state"
	"go.yaml.in/yaml/v4"
	"k8s.io/client-go/util/jsonpath"
)

// resourcePrinter renders resources in one of `get`'s output formats. withEvents (watch mode)
// adds the kind of change to every resource.
type resourcePrinter interface {
	WriteHeader(rd *meta.ResourceDefinition) error
	WriteResource(node string, r resource.Resource, event state.EventType) error
	Flush() error
}

const outputFormats = "table, yaml, json or jsonpath=EXPR"

// newResourcePrinter parses an -o value. It runs before anything is dialled, so a typo costs no
// round trip.
func newResourcePrinter(format string, w io.Writer, withEvents bool) (resourcePrinter, error) {
	switch {
	case format == "table":
		return &tablePrinter{w: w, withEvents: withEvents}, nil
	case format == "yaml":
		return &yamlPrinter{w: w, withEvents: withEvents}, nil
	case format == "json":
		return &jsonPrinter{w: w, withEvents: withEvents}, nil
	case format == "jsonpath" || strings.HasPrefix(format, "jsonpath="):
		expr := strings.TrimSpace(strings.TrimPrefix(strings.TrimPrefix(format, "jsonpath"), "="))
		if expr == "" {
			return nil, fmt.Errorf("output format jsonpath needs an expression, for example -o 'jsonpath={.spec.state}'")
		}

		// Accept ".spec.state" for "{.spec.state}", as kubectl does.
		if !strings.Contains(expr, "{") {
			expr = "{" + expr + "}"
		}

		jp := jsonpath.New("output").AllowMissingKeys(true)
		if err := jp.Parse(expr); err != nil {
			return nil, fmt.Errorf("output format jsonpath: invalid expression %q: %w", expr, err)
		}

		return &jsonPathPrinter{w: w, withEvents: withEvents, path: jp}, nil
	default:
		return nil, fmt.Errorf("unknown output format %q: want %s", format, outputFormats)
	}
}

// eventLabel is the word the yaml and json outputs use for a change in watch mode.
func eventLabel(event state.EventType) string {
	return strings.ToLower(event.String())
}

// specData decodes a resource's spec into plain maps and slices, for JSONPath.
func specData(r resource.Resource) (any, error) {
	out, err := yaml.Marshal(r.Spec())
	if err != nil {
		return nil, fmt.Errorf("%s %s: rendering spec: %w", r.Metadata().Type(), r.Metadata().ID(), err)
	}

	var data any

	if err = yaml.Unmarshal(out, &data); err != nil {
		return nil, fmt.Errorf("%s %s: decoding spec: %w", r.Metadata().Type(), r.Metadata().ID(), err)
	}

	return data, nil
}

// resourceYAML renders metadata and spec as `talosctl get -o yaml` does.
func resourceYAML(r resource.Resource) ([]byte, error) {
	doc, err := resource.MarshalYAML(r)
	if err != nil {
		return nil, err
	}

	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%s %s: rendering YAML: %w", r.Metadata().Type(), r.Metadata().ID(), err)
	}

	return out, nil
}

// resourceData is the JSON form of a resource: node, event (watch), metadata and spec.
func resourceData(node string, r resource.Resource, event state.EventType, withEvents bool) (map[string]any, error) {
	out, err := resourceYAML(r)
	if err != nil {
		return nil, err
	}

	var data map[string]any

	if err = yaml.Unmarshal(out, &data); err != nil {
		return nil, fmt.Errorf("%s %s: decoding YAML: %w", r.Metadata().Type(), r.Metadata().ID(), err)
	}

	data["node"] = node

	if withEvents {
		data["event"] = eventLabel(event)
	}

	return data, nil
}

// tablePrinter writes aligned columns: NODE, the change (watch), NAMESPACE, TYPE, ID, VERSION
// and the definition's print columns. Rows are buffered until Flush; column widths only grow
// from one Flush to the next, so that the rows a watch prints one by one stay aligned with the
// header and the rows before them.
type tablePrinter struct {
	w           io.Writer
	withEvents  bool
	displayType string
	columns     []*jsonpath.JSONPath
	rows        [][]string
	widths      []int
}

// tableColumnGap separates columns.
const tableColumnGap = 3

func (p *tablePrinter) WriteHeader(rd *meta.ResourceDefinition) error {
	spec := rd.TypedSpec()
	p.displayType = spec.DisplayType

	fields := []string{"NODE"}
	if p.withEvents {
		fields = append(fields, "*")
	}

	fields = append(fields, "NAMESPACE", "TYPE", "ID", "VERSION")

	for _, column := range spec.PrintColumns {
		jp := jsonpath.New(column.Name).AllowMissingKeys(true)
		if err := jp.Parse(column.JSONPath); err != nil {
			return fmt.Errorf("resource definition %s: print column %q: invalid JSONPath %q: %w", spec.Type, column.Name, column.JSONPath, err)
		}

		p.columns = append(p.columns, jp)
		fields = append(fields, strings.ToUpper(column.Name))
	}

	p.rows = append(p.rows, fields)

	return nil
}

func (p *tablePrinter) WriteResource(node string, r resource.Resource, event state.EventType) error {
	md := r.Metadata()

	values := []string{node}

	if p.withEvents {
		change := " "

		switch event { //nolint:exhaustive // the other events carry no resource
		case state.Created:
			change = "+"
		case state.Destroyed:
			change = "-"
		}

		values = append(values, change)
	}

	values = append(values, md.Namespace(), p.displayType, md.ID(), md.Version().String())

	if len(p.columns) > 0 {
		spec, err := specData(r)
		if err != nil {
			return err
		}

		for _, column := range p.columns {
			var buf bytes.Buffer

			if err = column.Execute(&buf, spec); err != nil {
				return fmt.Errorf("%s %s: print column: %w", md.Type(), md.ID(), err)
			}

			values = append(values, buf.String())
		}
	}

	p.rows = append(p.rows, values)

	return nil
}

func (p *tablePrinter) Flush() error {
	for _, row := range p.rows {
		for i, cell := range row {
			if i == len(p.widths) {
				p.widths = append(p.widths, 0)
			}

			p.widths[i] = max(p.widths[i], utf8.RuneCountInString(cell))
		}
	}

	var buf strings.Builder

	for _, row := range p.rows {
		for i, cell := range row {
			buf.WriteString(cell)

			if i < len(row)-1 {
				buf.WriteString(strings.Repeat(" ", p.widths[i]-utf8.RuneCountInString(cell)+tableColumnGap))
			}
		}

		buf.WriteByte('\n')
	}

	p.rows = p.rows[:0]

	_, err := io.WriteString(p.w, buf.String())

	return err
}

// yamlPrinter writes one YAML document per resource, separated by ---.
type yamlPrinter struct {
	w          io.Writer
	withEvents bool
	started    bool
}

func (p *yamlPrinter) WriteHeader(*meta.ResourceDefinition) error { return nil }

func (p *yamlPrinter) WriteResource(node string, r resource.Resource, event state.EventType) error {
	out, err := resourceYAML(r)
	if err != nil {
		return err
	}

	var buf bytes.Buffer

	if p.started {
		buf.WriteString("---\n")
	}

	p.started = true

	nodeLine, err := yaml.Marshal(map[string]string{"node": node})
	if err != nil {
		return err
	}

	buf.Write(nodeLine)

	if p.withEvents {
		fmt.Fprintf(&buf, "event: %s\n", eventLabel(event))
	}

	buf.Write(out)

	_, err = p.w.Write(buf.Bytes())

	return err
}

func (p *yamlPrinter) Flush() error { return nil }

// jsonPrinter writes one indented JSON object per resource.
type jsonPrinter struct {
	w          io.Writer
	withEvents bool
}

func (p *jsonPrinter) WriteHeader(*meta.ResourceDefinition) error { return nil }

func (p *jsonPrinter) WriteResource(node string, r resource.Resource, event state.EventType) error {
	data, err := resourceData(node, r, event, p.withEvents)
	if err != nil {
		return err
	}

	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "    ")

	return enc.Encode(data)
}

func (p *jsonPrinter) Flush() error { return nil }

// jsonPathPrinter evaluates a JSONPath over each resource's JSON form: scalars are printed as
// they are, one per line, and maps and lists as indented JSON.
type jsonPathPrinter struct {
	w          io.Writer
	withEvents bool
	path       *jsonpath.JSONPath
}

func (p *jsonPathPrinter) WriteHeader(*meta.ResourceDefinition) error { return nil }

func (p *jsonPathPrinter) WriteResource(node string, r resource.Resource, event state.EventType) error {
	data, err := resourceData(node, r, event, p.withEvents)
	if err != nil {
		return err
	}

	results, err := p.path.FindResults(data)
	if err != nil {
		return fmt.Errorf("%s %s: jsonpath: %w", r.Metadata().Type(), r.Metadata().ID(), err)
	}

	var buf bytes.Buffer

	for _, values := range results {
		for _, value := range values {
			if err = writeJSONPathValue(&buf, value); err != nil {
				return err
			}
		}
	}

	_, err = p.w.Write(buf.Bytes())

	return err
}

func (p *jsonPathPrinter) Flush() error { return nil }

func writeJSONPathValue(w *bytes.Buffer, value reflect.Value) error {
	for value.Kind() == reflect.Interface || value.Kind() == reflect.Pointer {
		if value.IsNil() {
			w.WriteString("null\n")

			return nil
		}

		value = value.Elem()
	}

	switch value.Kind() { // everything else is a scalar
	case reflect.Map, reflect.Slice, reflect.Array, reflect.Struct:
		out, err := json.MarshalIndent(value.Interface(), "", "    ")
		if err != nil {
			return fmt.Errorf("jsonpath: encoding result: %w", err)
		}

		w.Write(out)
		w.WriteByte('\n')
	default:
		fmt.Fprintln(w, value.Interface())
	}

	return nil
}
