package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"

	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/revocation"
)

// ConfigEvents are the events of a config change from before to after, by caller: the change
// itself (typ is TypeConfigApplied or TypeConfigPatched) with the paths of the fields it touched,
// then the revocations it added or removed and the root changes it made, each an event of its
// own. No value of the configs goes into them but public ones (revocation entries, fingerprints).
func ConfigEvents(typ string, caller *Caller, before, after *machineconfig.Config) ([]Event, error) {
	a, err := before.Bytes()
	if err != nil {
		return nil, fmt.Errorf("error encoding the old config: %w", err)
	}

	b, err := after.Bytes()
	if err != nil {
		return nil, fmt.Errorf("error encoding the new config: %w", err)
	}

	changed, err := ChangedPaths(a, b)
	if err != nil {
		return nil, err
	}

	events := []Event{{Type: typ, Caller: caller, Changed: changed}}

	oldDoc, newDoc := before.Document(), after.Document()

	added, removed := revocationChanges(oldDoc, newDoc)
	if len(added) > 0 {
		events = append(events, Event{Type: TypeRevocationAdded, Caller: caller, Revocations: added})
	}

	if len(removed) > 0 {
		events = append(events, Event{Type: TypeRevocationRemoved, Caller: caller, Revocations: removed})
	}

	if roots := RootChanges(oldDoc, newDoc); len(roots) > 0 {
		events = append(events, Event{Type: TypeRotationStep, Caller: caller, Roots: roots})
	}

	return events, nil
}

// ChangedPaths lists the paths of the fields that differ between two configs (YAML, one or more
// documents), sorted: machine.certSANs, cluster.ca.crt. Fields of the v1alpha1 document are
// plain; those of other documents start with (apiVersion/kind[/name]). A list that changed is one
// path; a field added or removed is its path, not those below it.
func ChangedPaths(before, after []byte) ([]string, error) {
	a, err := decodeDocuments(before)
	if err != nil {
		return nil, fmt.Errorf("the old config: %w", err)
	}

	b, err := decodeDocuments(after)
	if err != nil {
		return nil, fmt.Errorf("the new config: %w", err)
	}

	set := map[string]bool{}

	for id, doc := range a {
		diffValues(set, documentPrefix(id), doc, b[id])
	}

	for id, doc := range b {
		if _, ok := a[id]; !ok {
			diffValues(set, documentPrefix(id), nil, doc)
		}
	}

	paths := make([]string, 0, len(set))
	for p := range set {
		paths = append(paths, p)
	}

	sort.Strings(paths)

	return paths, nil
}

// decodeDocuments decodes every document keyed by its identity: v1alpha1 for the document
// without a kind, apiVersion/kind[/name] for the others.
func decodeDocuments(data []byte) (map[string]any, error) {
	docs := map[string]any{}
	dec := yaml.NewDecoder(bytes.NewReader(data))

	for i := 0; ; i++ {
		var doc any

		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}

		if err != nil {
			return nil, fmt.Errorf("document %d: %w", i+1, err)
		}

		id := machineconfig.Version

		if m, ok := doc.(map[string]any); ok {
			if kind, _ := m["kind"].(string); kind != "" {
				apiVersion, _ := m["apiVersion"].(string)
				id = apiVersion + "/" + kind

				if name, _ := m["name"].(string); name != "" {
					id += "/" + name
				}
			}
		}

		if _, dup := docs[id]; dup {
			id = fmt.Sprintf("%s#%d", id, i+1)
		}

		docs[id] = doc
	}
}

func documentPrefix(id string) string {
	if id == machineconfig.Version {
		return ""
	}

	return "(" + id + ")"
}

func diffValues(set map[string]bool, path string, a, b any) {
	am, aMap := a.(map[string]any)
	bm, bMap := b.(map[string]any)

	if !aMap || !bMap {
		if !reflect.DeepEqual(a, b) {
			set[rootPath(path)] = true
		}

		return
	}

	for k, av := range am {
		bv, ok := bm[k]
		if !ok {
			set[join(path, k)] = true

			continue
		}

		diffValues(set, join(path, k), av, bv)
	}

	for k := range bm {
		if _, ok := am[k]; !ok {
			set[join(path, k)] = true
		}
	}
}

func join(path, key string) string {
	if path == "" || path[len(path)-1] == ')' {
		return path + key
	}

	return path + "." + key
}

// rootPath names a whole document that changed (not a mapping on one side).
func rootPath(path string) string {
	if path == "" {
		return "(" + machineconfig.Version + ")"
	}

	return path
}

// Root names of RootChange.
const (
	RootOS             = "os"
	RootKubernetes     = "kubernetes"
	RootEtcd           = "etcd"
	RootAggregator     = "aggregator"
	RootServiceAccount = "service-account"
	RootJoinToken      = "join-token"
)

// Steps of RootChange.
const (
	StepIssuingChanged  = "issuing-changed"
	StepAcceptedAdded   = "accepted-added"
	StepAcceptedRemoved = "accepted-removed"
)

// rootFields is what one root is in a config: the fingerprint of its issuing CA or key and the
// fingerprints of the accepted ones (tokens: opaque keys that are never written).
type rootFields struct {
	issuing  string
	accepted []string
	tokens   bool
}

// RootChanges compares the roots of two configs: per root, whether its issuing CA (or key, or
// join token) changed, and which accepted ones came and went.
func RootChanges(before, after *machineconfig.Document) []RootChange {
	a, b := rootsOf(before), rootsOf(after)

	var changes []RootChange

	for _, root := range []string{RootOS, RootKubernetes, RootEtcd, RootAggregator, RootServiceAccount, RootJoinToken} {
		old, cur := a[root], b[root]

		if old.issuing != cur.issuing {
			c := RootChange{Root: root, Step: StepIssuingChanged}
			if !cur.tokens {
				c.From, c.To = old.issuing, cur.issuing
			}

			changes = append(changes, c)
		}

		added, removed := setDiff(old.accepted, cur.accepted)

		for _, step := range []struct {
			name string
			fps  []string
		}{{StepAcceptedAdded, added}, {StepAcceptedRemoved, removed}} {
			if len(step.fps) == 0 {
				continue
			}

			c := RootChange{Root: root, Step: step.name, Count: len(step.fps)}
			if !cur.tokens {
				c.Fingerprints = step.fps
			}

			changes = append(changes, c)
		}
	}

	return changes
}

func rootsOf(doc *machineconfig.Document) map[string]rootFields {
	roots := map[string]rootFields{}

	if doc == nil {
		return roots
	}

	if m := doc.Machine; m != nil {
		roots[RootOS] = rootFields{issuing: caFingerprint(m.CA), accepted: certFingerprints(m.AcceptedCAs)}
		// Tokens are compared by value here; RootChanges writes only counts for them.
		roots[RootJoinToken] = rootFields{issuing: m.Token, accepted: m.AcceptedTokens, tokens: true}
	}

	if c := doc.Cluster; c != nil {
		roots[RootKubernetes] = rootFields{issuing: caFingerprint(c.CA), accepted: certFingerprints(c.AcceptedCAs)}
		roots[RootAggregator] = rootFields{issuing: caFingerprint(c.AggregatorCA), accepted: certFingerprints(c.AcceptedAggregatorCAs)}

		if c.Etcd != nil {
			roots[RootEtcd] = rootFields{issuing: caFingerprint(c.Etcd.CA), accepted: certFingerprints(c.Etcd.AcceptedCAs)}
		}

		var sa string
		if c.ServiceAccount != nil {
			sa = keyFingerprint(c.ServiceAccount.Key)
		}

		var accepted []string
		for _, k := range c.AcceptedServiceAccountKeys {
			if k != nil {
				accepted = append(accepted, keyFingerprint(k.Key))
			}
		}

		roots[RootServiceAccount] = rootFields{issuing: sa, accepted: accepted}
	}

	return roots
}

// unreadable stands for a CA or key that does not parse, so that a change to it still shows.
const unreadable = "unreadable"

func caFingerprint(ck *machineconfig.CertificateAndKey) string {
	if ck == nil || len(ck.Crt) == 0 {
		return ""
	}

	return pemFingerprint(ck.Crt)
}

func pemFingerprint(data []byte) string {
	crt, err := certs.ParseCertificate(data)
	if err != nil {
		return unreadable
	}

	return certs.Fingerprint(crt)
}

func certFingerprints(list []*machineconfig.Certificate) []string {
	var out []string

	for _, c := range list {
		if c != nil && len(c.Crt) > 0 {
			out = append(out, pemFingerprint(c.Crt))
		}
	}

	return out
}

// keyFingerprint is the fingerprint of a service-account key's public key, whether the PEM
// holds the private or the public key.
func keyFingerprint(data []byte) string {
	if len(data) == 0 {
		return ""
	}

	if key, err := certs.ParsePrivateKey(data); err == nil {
		if fp, err := certs.PublicKeyFingerprint(key.Public()); err == nil {
			return fp
		}
	}

	if pub, err := certs.ParsePublicKey(data); err == nil {
		if fp, err := certs.PublicKeyFingerprint(pub); err == nil {
			return fp
		}
	}

	return unreadable
}

// setDiff is what b has that a has not, and what a has that b has not, each sorted and unique.
func setDiff(a, b []string) (added, removed []string) {
	for _, x := range b {
		if !slices.Contains(a, x) && !slices.Contains(added, x) {
			added = append(added, x)
		}
	}

	for _, x := range a {
		if !slices.Contains(b, x) && !slices.Contains(removed, x) {
			removed = append(removed, x)
		}
	}

	slices.Sort(added)
	slices.Sort(removed)

	return added, removed
}

func revocationChanges(before, after *machineconfig.Document) (added, removed []Revocation) {
	var a, b []revocation.Entry

	if before != nil && before.Machine != nil {
		a = before.Machine.RevokedCertificates
	}

	if after != nil && after.Machine != nil {
		b = after.Machine.RevokedCertificates
	}

	for _, e := range b {
		if !slices.ContainsFunc(a, func(x revocation.Entry) bool { return revocation.Same(x, e) }) {
			added = append(added, revocationOf(e))
		}
	}

	for _, e := range a {
		if !slices.ContainsFunc(b, func(x revocation.Entry) bool { return revocation.Same(x, e) }) {
			removed = append(removed, revocationOf(e))
		}
	}

	return added, removed
}

func revocationOf(e revocation.Entry) Revocation {
	return Revocation{Fingerprint: e.Fingerprint, Serial: e.Serial, Issuer: e.Issuer, NotAfter: e.NotAfter, Reason: e.Reason}
}
