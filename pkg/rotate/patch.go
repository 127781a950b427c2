package rotate

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"slices"

	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// Patch is a strategic merge patch of one root of one node's machine config.
//
// Patches are index-free and idempotent in effect: lists are appended to, entries are deleted by
// their content (`$patch: delete`), and a patch is only computed for a node whose config is not
// yet at the target phase, from that config.
type Patch struct {
	Root Root
	// Data is the patch as sent to the node.
	Data []byte
	// Redacted is Data with private keys replaced by ******, for printing.
	Redacted []byte
}

// patchFor returns the patch that takes the root of one node's config to the target phase, or nil
// when the node is there or past it: a rotation never goes back.
//
// The target states are: accepted = old CA issues, new CA in the accepted list; switched = new CA
// issues (with the new key where the node held the old key), old CA in the accepted list, new CA
// not (it issues); retired = new CA issues, neither CA in the accepted list.
func patchFor(root Root, rc rootConfig, rp *RootPlan, target Phase) (*Patch, error) {
	if root == RootJoinToken {
		return tokenPatch(rc, rp, target)
	}

	phase, err := derivePhase(root, rc, rp.Old.Fingerprint, rp.New.Fingerprint)
	if err != nil {
		return nil, err
	}

	if phase >= target {
		return nil, nil //nolint:nilnil // nothing to do is not an error
	}

	oldEntry, err := rp.Old.entryPEM(root)
	if err != nil {
		return nil, fmt.Errorf("plan roots.%s.old: %w", root, err)
	}

	newEntry, err := rp.New.entryPEM(root)
	if err != nil {
		return nil, fmt.Errorf("plan roots.%s.new: %w", root, err)
	}

	fields := fieldsOf[root]
	b := patchBuilder{fields: fields}

	wantIssuing := rp.New.Fingerprint
	if target == PhaseAccepted {
		wantIssuing = rp.Old.Fingerprint
	}

	if rc.issuingFingerprint != wantIssuing {
		// Below the target the node issues with the old CA, so only the switch and retire
		// targets get here: the node moves to the new CA, with the new key where it held the old.
		if len(rc.issuingKey) > 0 && len(rp.New.Key) == 0 {
			return nil, fmt.Errorf("plan roots.%s.new.key is empty, but this node issues with %s: the new key is required", root, root.issuingPath())
		}

		b.setIssuing(rp.New, len(rc.issuingKey) > 0)
	}

	wantOld, wantNew := target == PhaseSwitched, target == PhaseAccepted

	if err = b.want(root, rc, rp.Old.Fingerprint, oldEntry, wantOld); err != nil {
		return nil, err
	}

	if err = b.want(root, rc, rp.New.Fingerprint, newEntry, wantNew); err != nil {
		return nil, err
	}

	if b.empty() {
		return nil, nil //nolint:nilnil // the phase lags only in a way no field change fixes (cannot happen)
	}

	data, err := b.render(false)
	if err != nil {
		return nil, err
	}

	redacted, err := b.render(true)
	if err != nil {
		return nil, err
	}

	return &Patch{Root: root, Data: data, Redacted: redacted}, nil
}

// entryPEM is the accepted-list form of the material: the CA certificate, or the public key of a
// service-account key.
func (m Material) entryPEM(root Root) ([]byte, error) {
	if !fieldsOf[root].keyOnly {
		if len(m.Crt) == 0 {
			return nil, fmt.Errorf("crt is empty")
		}

		return m.Crt, nil
	}

	return publicKeyPEM(m.Key)
}

// patchBuilder collects the field changes of one root.
type patchBuilder struct {
	fields rootFields

	issuing    *Material
	issuingKey bool
	add        [][]byte
	remove     [][]byte
}

func (b *patchBuilder) setIssuing(m Material, withKey bool) {
	b.issuing = &m
	b.issuingKey = withKey
}

// want adds or removes the entry holding fingerprint so that the accepted list holds it or not.
func (b *patchBuilder) want(root Root, rc rootConfig, fingerprint string, entry []byte, present bool) error {
	if present {
		if !rc.accepts(fingerprint) {
			b.add = append(b.add, entry)
		}

		return nil
	}

	for i, e := range rc.accepted {
		if !slices.Contains(e.fingerprints, fingerprint) {
			continue
		}

		if len(e.fingerprints) > 1 {
			return fmt.Errorf("%s[%d] bundles %d certificates: rotate-ca deletes whole entries; split it into one entry per certificate",
				root.acceptedPath(), i, len(e.fingerprints))
		}

		if !slices.ContainsFunc(b.remove, func(r []byte) bool { return bytes.Equal(r, e.pem) }) {
			b.remove = append(b.remove, e.pem)
		}
	}

	return nil
}

func (b *patchBuilder) empty() bool {
	return b.issuing == nil && len(b.add) == 0 && len(b.remove) == 0
}

func (b *patchBuilder) render(redact bool) ([]byte, error) {
	entryKey := "crt"
	if b.fields.keyOnly {
		entryKey = "key"
	}

	var fields []keyValue

	if b.issuing != nil {
		var issuing *yaml.Node

		key := ""
		if b.issuingKey {
			key = pemValue(b.issuing.Key)
			if redact {
				key = machineconfig.Redacted
			}
		}

		if b.fields.keyOnly {
			issuing = mapping(kv("key", scalar(key)))
		} else {
			issuing = mapping(kv("crt", scalar(pemValue(b.issuing.Crt))), kv("key", scalar(key)))
		}

		fields = append(fields, kv(b.fields.issuing, issuing))
	}

	if len(b.add) > 0 || len(b.remove) > 0 {
		list := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}

		for _, e := range b.add {
			list.Content = append(list.Content, mapping(kv(entryKey, scalar(pemValue(e)))))
		}

		for _, e := range b.remove {
			list.Content = append(list.Content, mapping(kv("$patch", scalar("delete")), kv(entryKey, scalar(pemValue(e)))))
		}

		fields = append(fields, kv(b.fields.accepted, list))
	}

	doc := mapping(fields...)

	for i := len(b.fields.section) - 1; i >= 0; i-- {
		doc = mapping(kv(b.fields.section[i], doc))
	}

	var buf bytes.Buffer

	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(4)

	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encoding patch: %w", err)
	}

	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding patch: %w", err)
	}

	return buf.Bytes(), nil
}

// pemValue is how the machine config writes PEM: the standard base64 of the PEM text.
func pemValue(pem []byte) string {
	return base64.StdEncoding.EncodeToString(pem)
}

func scalar(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

type keyValue struct {
	key   string
	value *yaml.Node
}

func kv(key string, value *yaml.Node) keyValue {
	return keyValue{key: key, value: value}
}

// mapping builds a mapping with the pairs in order.
func mapping(pairs ...keyValue) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}

	for _, p := range pairs {
		n.Content = append(n.Content, scalar(p.key), p.value)
	}

	return n
}
