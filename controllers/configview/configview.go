// Package configview owns how controllers read the active machine config: one input declaration
// and one decoder of the v1alpha1 document.
package configview

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/config"
)

// documentVersion is the version of the machine config document nodepki reads.
const documentVersion = "v1alpha1"

// Input is the input every controller that reads the active machine config declares.
func Input() controller.Input {
	return controller.Input{
		Namespace: config.NamespaceName,
		Type:      config.MachineConfigType,
		ID:        optional.Some(config.ActiveID),
		Kind:      controller.InputWeak,
	}
}

// Read returns the typed view of the active machine config, or nil if there is none. The config
// was validated before it was written, so decoding is enough.
func Read(ctx context.Context, r controller.Reader) (*machineconfig.Document, error) {
	mc, err := safe.ReaderGetByID[*config.MachineConfig](ctx, r, config.ActiveID)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil, nil
		}

		return nil, fmt.Errorf("error reading machine config: %w", err)
	}

	doc, err := Decode(mc.TypedSpec().Raw)
	if err != nil {
		return nil, fmt.Errorf("error decoding machine config version %s: %w", mc.Metadata().Version(), err)
	}

	return doc, nil
}

// Decode decodes the v1alpha1 document (the one without a kind) of a machine config file.
func Decode(raw []byte) (*machineconfig.Document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))

	for {
		// One pass per document: the header and the typed view together. Documents of another
		// kind have none of the typed view's fields, or are skipped when they do not fit it.
		var doc struct {
			Kind                   string `yaml:"kind"`
			machineconfig.Document `yaml:",inline"`
		}

		err := dec.Decode(&doc)

		switch {
		case errors.Is(err, io.EOF):
			return nil, errors.New("no v1alpha1 document (a document with `version: v1alpha1` and no kind)")
		case err != nil && (!isTypeError(err) || doc.Kind == "" && doc.Version == documentVersion):
			return nil, err
		case err == nil && doc.Kind == "" && doc.Version == documentVersion:
			return &doc.Document, nil
		}
	}
}

// isTypeError reports a document that parsed as YAML but does not fit the typed view.
func isTypeError(err error) bool {
	var loadErrs *yaml.LoadErrors

	return errors.As(err, &loadErrs)
}
