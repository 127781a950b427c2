// Package configview owns how controllers read the active machine config: one input declaration
// and a typed view decoded once per change, shared by every controller of the process.
package configview

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/resource"
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

// Read returns the typed view of the active machine config, or nil if there is none.
// The document is shared between controllers: never modify it.
//
// The config was validated before it was written, so decoding is enough. Every controller that
// reads the config wakes on each change of it, so the decoded document is remembered per
// controller (by resource version) and across controllers (by content): one decode per change.
func Read(ctx context.Context, r controller.Reader, cache *Cache) (*machineconfig.Document, error) {
	mc, err := safe.ReaderGetByID[*config.MachineConfig](ctx, r, config.ActiveID)
	if err != nil {
		if state.IsNotFoundError(err) {
			return nil, nil
		}

		return nil, fmt.Errorf("error reading machine config: %w", err)
	}

	if cache.doc != nil && cache.version.Equal(mc.Metadata().Version()) {
		return cache.doc, nil
	}

	doc, err := lastDecoded.decode(mc.TypedSpec().Raw)
	if err != nil {
		return nil, fmt.Errorf("error decoding machine config version %s: %w", mc.Metadata().Version(), err)
	}

	cache.doc, cache.version = doc, mc.Metadata().Version()

	return doc, nil
}

// Cache remembers the last decoded machine config of one controller.
type Cache struct {
	doc     *machineconfig.Document
	version resource.Version
}

// lastDecoded is the machine config most recently decoded in this process.
var lastDecoded decodedMachineConfig

type decodedMachineConfig struct {
	mu  sync.Mutex
	sum [sha256.Size]byte
	doc *machineconfig.Document
}

// decode returns the document of raw, decoding it only if it is not the last one decoded. The
// lock is held while decoding, so controllers woken by the same change wait for one decode.
func (d *decodedMachineConfig) decode(raw []byte) (*machineconfig.Document, error) {
	sum := sha256.Sum256(raw)

	d.mu.Lock()
	defer d.mu.Unlock()

	if d.doc != nil && d.sum == sum {
		return d.doc, nil
	}

	doc, err := decodeMachineConfig(raw)
	if err != nil {
		return nil, err
	}

	d.sum, d.doc = sum, doc

	return doc, nil
}

// decodeMachineConfig decodes the v1alpha1 document (the one without a kind) of a machine config file.
func decodeMachineConfig(raw []byte) (*machineconfig.Document, error) {
	dec := yaml.NewDecoder(bytes.NewReader(raw))

	for {
		var node yaml.Node

		if err := dec.Decode(&node); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, errors.New("no v1alpha1 document (a document with `version: v1alpha1` and no kind)")
			}

			return nil, err
		}

		var header struct {
			Kind    string `yaml:"kind"`
			Version string `yaml:"version"`
		}

		if err := node.Decode(&header); err != nil || header.Kind != "" || header.Version != documentVersion {
			continue
		}

		var doc machineconfig.Document

		if err := node.Decode(&doc); err != nil {
			return nil, err
		}

		return &doc, nil
	}
}
