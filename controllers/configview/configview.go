// Package configview owns how controllers read the active machine config: one decoder of the
// v1alpha1 document, the controller that decodes each config change once into a
// config.MachineConfigView, and the input declaration and reader of that view.
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

// Input is the input every controller that reads the active machine config declares: its view,
// which MachineConfigViewController must run to produce.
func Input() controller.Input {
	return controller.Input{
		Namespace: config.ViewNamespaceName,
		Type:      config.MachineConfigViewType,
		ID:        optional.Some(config.ActiveID),
		Kind:      controller.InputWeak,
	}
}

// Read returns the typed view of the active machine config, or nil if there is none. The document
// is the reader's own copy.
func Read(ctx context.Context, r controller.Reader) (*machineconfig.Document, error) {
	view, err := safe.ReaderGetByID[*config.MachineConfigView](ctx, r, config.ActiveID)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil, nil
		}

		return nil, fmt.Errorf("error reading the machine config view: %w", err)
	}

	return view.TypedSpec().Document, nil
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
