package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nodepki/nodepki/pkg/bundle"
)

// Output types of `gen config --output-types`, as talosctl names them.
const (
	typeControlPlane = "controlplane"
	typeWorker       = "worker"
	typeTalosconfig  = "talosconfig"
)

// outputTypeFiles maps each output type to the file name it is written under in a directory.
var outputTypeFiles = map[string]string{
	typeControlPlane: controlPlaneFile,
	typeWorker:       workerFile,
	typeTalosconfig:  talosconfigFile,
}

var outputTypeOrder = []string{typeControlPlane, typeWorker, typeTalosconfig}

// parseOutputTypes checks the requested types and returns them in the canonical order, once each.
func parseOutputTypes(values []string) ([]string, error) {
	var types []string

	for _, v := range values {
		v = strings.ToLower(strings.TrimSpace(v))
		if _, ok := outputTypeFiles[v]; !ok {
			return nil, fmt.Errorf("--output-types: unknown type %q: want any of %s", v, strings.Join(outputTypeOrder, ", "))
		}

		if !slices.Contains(types, v) {
			types = append(types, v)
		}
	}

	if len(types) == 0 {
		return nil, fmt.Errorf("--output-types is empty: want any of %s", strings.Join(outputTypeOrder, ", "))
	}

	slices.SortFunc(types, func(a, b string) int {
		return slices.Index(outputTypeOrder, a) - slices.Index(outputTypeOrder, b)
	})

	return types, nil
}

// destination is where `gen config` writes: stdout, or one path per output type.
type destination struct {
	stdout bool
	// dir is created if missing.
	dir   string
	paths []string
	// file is set when -o named the file of a single type.
	file bool
}

// outputDestination resolves -o for the types: "-" is stdout (one type only), an existing
// directory, a path ending in a separator or several types mean a directory, anything else the
// file of the single type.
func outputDestination(types []string, output string) (destination, error) {
	if output == "" {
		return destination{}, errors.New(`--output is empty: give a directory, a file (with one --output-types) or "-" for stdout`)
	}

	if output == "-" {
		if len(types) != 1 {
			return destination{}, fmt.Errorf("-o - (stdout) takes exactly one output type, not %d: add -t %s",
				len(types), strings.Join(outputTypeOrder, "|"))
		}

		return destination{stdout: true}, nil
	}

	info, err := os.Stat(output)
	// A trailing separator names a directory that may not exist yet.
	isDir := err == nil && info.IsDir() || strings.HasSuffix(output, string(filepath.Separator))

	if len(types) > 1 || isDir {
		if err == nil && !isDir {
			return destination{}, fmt.Errorf("-o %s is a file: with several output types -o must be a directory", output)
		}

		paths := make([]string, 0, len(types))
		for _, t := range types {
			paths = append(paths, filepath.Join(output, outputTypeFiles[t]))
		}

		return destination{dir: output, paths: paths}, nil
	}

	return destination{dir: filepath.Dir(output), paths: []string{output}, file: true}, nil
}

// describe says what was written where, for the progress line.
func (d destination) describe(types []string) string {
	if d.file {
		return fmt.Sprintf("%s to %s", types[0], d.paths[0])
	}

	names := make([]string, 0, len(types))
	for _, t := range types {
		names = append(names, outputTypeFiles[t])
	}

	list := names[0]
	if len(names) > 1 {
		list = strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
	}

	return fmt.Sprintf("%s to %s", list, d.dir)
}

// generateOutputs builds the contents of each type, in the order of types. The machine configs are
// only generated (and their patches only applied) when one of them is asked for.
func generateOutputs(name, endpoint string, b *bundle.Bundle, opts genConfigOptions, types []string) ([][]byte, error) {
	generated := map[string][]byte{}

	if slices.Contains(types, typeControlPlane) || slices.Contains(types, typeWorker) {
		controlPlane, worker, err := generateConfigs(name, endpoint, b, opts)
		if err != nil {
			return nil, err
		}

		generated[typeControlPlane], generated[typeWorker] = controlPlane, worker
	}

	if slices.Contains(types, typeTalosconfig) {
		talosconfig, err := adminTalosconfig(name, b)
		if err != nil {
			return nil, err
		}

		generated[typeTalosconfig] = talosconfig
	}

	out := make([][]byte, 0, len(types))
	for _, t := range types {
		out = append(out, generated[t])
	}

	return out, nil
}
