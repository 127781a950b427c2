package rotate

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// PlanVersion is the format version of plan files this package reads and writes.
const PlanVersion = 1

// DefaultPlanName is the plan file name rotate-ca uses beside the talosconfig by default.
const DefaultPlanName = "rotate-ca-plan.yaml"

// Plan is the rotation plan file: everything a rotation generates, written (mode 0600) before any
// node is touched, so that a crash loses nothing and a rerun resumes with the same CAs. It holds
// private keys.
type Plan struct {
	Version int `yaml:"version"`
	// Created is when the plan was made.
	Created time.Time `yaml:"created"`
	// Completed is set once every node runs with the new roots only and the outputs are written.
	Completed *time.Time `yaml:"completed,omitempty"`
	Roots     PlanRoots  `yaml:"roots"`
	// Client is the client certificate issued by the new OS CA for the talosconfig (os rotations).
	Client *ClientCertificate `yaml:"client,omitempty"`
	// ControlPlanes are the only nodes new issuing keys are sent to, recorded when the plan is
	// made from the control planes' own membership records (see keyship.go).
	ControlPlanes []string `yaml:"controlPlanes,omitempty"`
}

// PlanRoots holds one entry per rotated root.
type PlanRoots struct {
	OS             *RootPlan `yaml:"os,omitempty"`
	Kubernetes     *RootPlan `yaml:"kubernetes,omitempty"`
	Etcd           *RootPlan `yaml:"etcd,omitempty"`
	Aggregator     *RootPlan `yaml:"aggregator,omitempty"`
	ServiceAccount *RootPlan `yaml:"service-account,omitempty"`
	JoinToken      *RootPlan `yaml:"join-token,omitempty"`
}

// RootPlan is the old and the new material of one root.
type RootPlan struct {
	// Old is the root the cluster issued with when the plan was made.
	Old Material `yaml:"old"`
	// New replaces it. To rotate to a CA of your own, write a plan with only new.crt and new.key
	// (new.key for service-account) and run rotate-ca with it: the rest is filled in.
	New Material `yaml:"new"`
}

// Material is a CA (certificate and key), for service-account a signing key, for join-token a token.
type Material struct {
	Crt   machineconfig.PEM `yaml:"crt,omitempty"`
	Key   machineconfig.PEM `yaml:"key,omitempty"`
	Token string            `yaml:"token,omitempty"`
	// Fingerprint is the hex SHA-256 of the certificate's (or key's) public key, as AcceptedCAs
	// and CertificateStatuses report it.
	Fingerprint string `yaml:"fingerprint,omitempty"`
}

// ClientCertificate is a client certificate and its key.
type ClientCertificate struct {
	Crt machineconfig.PEM `yaml:"crt"`
	Key machineconfig.PEM `yaml:"key"`
}

// Get returns the plan of a root, or nil.
func (r *PlanRoots) Get(root Root) *RootPlan {
	switch root {
	case RootOS:
		return r.OS
	case RootKubernetes:
		return r.Kubernetes
	case RootEtcd:
		return r.Etcd
	case RootAggregator:
		return r.Aggregator
	case RootServiceAccount:
		return r.ServiceAccount
	case RootJoinToken:
		return r.JoinToken
	default:
		return nil
	}
}

func (r *PlanRoots) set(root Root, rp *RootPlan) {
	switch root {
	case RootOS:
		r.OS = rp
	case RootKubernetes:
		r.Kubernetes = rp
	case RootEtcd:
		r.Etcd = rp
	case RootAggregator:
		r.Aggregator = rp
	case RootServiceAccount:
		r.ServiceAccount = rp
	case RootJoinToken:
		r.JoinToken = rp
	}
}

// List returns the roots the plan rotates, in order.
func (r *PlanRoots) List() []Root {
	var out []Root

	for _, root := range AllRoots {
		if r.Get(root) != nil {
			out = append(out, root)
		}
	}

	return out
}

// LoadPlan reads and checks a plan file. A missing file is an error wrapping fs.ErrNotExist.
func LoadPlan(path string) (*Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the rotation plan: %w", err)
	}

	p, err := ParsePlan(data)
	if err != nil {
		return nil, fmt.Errorf("rotation plan %s: %w", path, err)
	}

	return p, nil
}

// ParsePlan decodes and checks a plan: unknown keys are refused (a typo would silently drop a
// root), every CA must be a CA with its matching key, and given fingerprints must match.
func ParsePlan(data []byte) (*Plan, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)

	p := &Plan{}
	if err := dec.Decode(p); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}

		return nil, fmt.Errorf("not a valid plan: %w", err)
	}

	if err := p.check(time.Now()); err != nil {
		return nil, err
	}

	return p, nil
}

func (p *Plan) check(now time.Time) error {
	if p.Version != PlanVersion {
		return fmt.Errorf("version: is %d, want %d", p.Version, PlanVersion)
	}

	roots := p.Roots.List()
	if len(roots) == 0 {
		return errors.New("roots: no root to rotate: set at least one of roots.os, roots.kubernetes, roots.etcd, roots.aggregator, roots.service-account, roots.join-token")
	}

	var errs []error

	for _, root := range roots {
		rp := p.Roots.Get(root)

		fingerprint, err := checkNewMaterial(root, rp.New, now)
		if err != nil {
			errs = append(errs, fmt.Errorf("roots.%s.new: %w", root, err))
		} else {
			rp.New.Fingerprint = fingerprint
		}

		if err = checkOldMaterial(root, &rp.Old); err != nil {
			errs = append(errs, fmt.Errorf("roots.%s.old: %w", root, err))
		}

		if rp.Old.Fingerprint != "" && rp.Old.Fingerprint == rp.New.Fingerprint {
			errs = append(errs, fmt.Errorf("roots.%s: old and new are the same %s: put a new one in roots.%s.new", root, root.what(), root))
		}
	}

	if p.Client != nil {
		if err := checkClient(p.Client); err != nil {
			errs = append(errs, fmt.Errorf("client: %w", err))
		}
	}

	return errors.Join(errs...)
}

// checkNewMaterial checks a new CA (or key) and returns its fingerprint.
func checkNewMaterial(root Root, m Material, now time.Time) (string, error) {
	if root == RootJoinToken {
		return checkNewToken(m)
	}

	var fingerprint string

	if fieldsOf[root].keyOnly {
		if len(m.Key) == 0 {
			return "", errors.New("key is required: the new service-account signing key (base64 of a PEM private key)")
		}

		if len(m.Crt) > 0 {
			return "", errors.New("crt must be empty: the service-account root is a key without certificate")
		}

		if _, err := certs.ParsePrivateKey(m.Key); err != nil {
			return "", fmt.Errorf("key: %w", err)
		}

		var err error
		if fingerprint, err = keyFingerprint(m.Key); err != nil {
			return "", fmt.Errorf("key: %w", err)
		}
	} else {
		if len(m.Crt) == 0 || len(m.Key) == 0 {
			return "", errors.New("crt and key are required: the new CA certificate and its key (base64 of PEM)")
		}

		ca, err := certs.LoadCA(m.Crt, m.Key)
		if err != nil {
			return "", err
		}

		if !now.Before(ca.Crt.NotAfter) {
			return "", fmt.Errorf("crt expired at %s: generate a new CA", ca.Crt.NotAfter.UTC().Format(time.RFC3339))
		}

		fingerprint = certs.Fingerprint(ca.Crt)
	}

	if m.Fingerprint != "" && m.Fingerprint != fingerprint {
		return "", fmt.Errorf("fingerprint %s does not match the %s (%s): remove it or fix it", m.Fingerprint, root.what(), fingerprint)
	}

	return fingerprint, nil
}

// checkOldMaterial checks the recorded old CA, if any, and fills in its fingerprint.
func checkOldMaterial(root Root, m *Material) error {
	if root == RootJoinToken {
		return checkOldToken(m)
	}

	if len(m.Crt) == 0 && len(m.Key) == 0 {
		if m.Fingerprint != "" {
			return errors.New("fingerprint is set without crt or key: remove old, it is filled in from the cluster")
		}

		return nil
	}

	var (
		fingerprint string
		err         error
	)

	if fieldsOf[root].keyOnly {
		fingerprint, err = keyFingerprint(m.Key)
	} else {
		fingerprint, err = oldCAFingerprint(m.Crt, m.Key)
	}

	if err != nil {
		return err
	}

	if m.Fingerprint != "" && m.Fingerprint != fingerprint {
		return fmt.Errorf("fingerprint %s does not match the %s (%s)", m.Fingerprint, root.what(), fingerprint)
	}

	m.Fingerprint = fingerprint

	return nil
}

// oldCAFingerprint checks a recorded old CA (its key is optional) and returns its fingerprint.
func oldCAFingerprint(crtPEM, keyPEM []byte) (string, error) {
	crt, err := certs.ParseCertificate(crtPEM)
	if err != nil {
		return "", fmt.Errorf("crt: %w", err)
	}

	if len(keyPEM) > 0 {
		if _, err = certs.LoadCA(crtPEM, keyPEM); err != nil {
			return "", err
		}
	}

	return certs.Fingerprint(crt), nil
}

func checkClient(c *ClientCertificate) error {
	crt, err := certs.ParseCertificate(c.Crt)
	if err != nil {
		return fmt.Errorf("crt: %w", err)
	}

	key, err := certs.ParsePrivateKey(c.Key)
	if err != nil {
		return fmt.Errorf("key: %w", err)
	}

	if !certs.KeyMatchesCertificate(crt, key) {
		return errors.New("key does not match crt")
	}

	return nil
}

// Bytes encodes the plan.
func (p *Plan) Bytes() ([]byte, error) {
	var buf bytes.Buffer

	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(4)

	if err := enc.Encode(p); err != nil {
		return nil, fmt.Errorf("encoding the rotation plan: %w", err)
	}

	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding the rotation plan: %w", err)
	}

	return buf.Bytes(), nil
}

// Save writes the plan atomically with mode 0600.
func (p *Plan) Save(path string) error {
	data, err := p.Bytes()
	if err != nil {
		return err
	}

	if err = atomicfile.WriteFile(path, data); err != nil {
		return fmt.Errorf("saving the rotation plan: %w", err)
	}

	return nil
}

// newPlan starts a plan for the roots with freshly generated material; Old is filled later from
// the cluster (see fill).
func newPlan(roots []Root, now time.Time) (*Plan, error) {
	p := &Plan{Version: PlanVersion, Created: now.UTC().Truncate(time.Second)}

	for _, root := range roots {
		m, err := generateMaterial(root)
		if err != nil {
			return nil, err
		}

		p.Roots.set(root, &RootPlan{New: m})
	}

	return p, nil
}

// generateMaterial makes a new CA (or service-account key) with the root's profile.
func generateMaterial(root Root) (Material, error) {
	if root == RootJoinToken {
		return generateToken()
	}

	if fieldsOf[root].keyOnly {
		key, err := certs.NewServiceAccountKey()
		if err != nil {
			return Material{}, err
		}

		fingerprint, err := keyFingerprint(key)
		if err != nil {
			return Material{}, err
		}

		return Material{Key: key, Fingerprint: fingerprint}, nil
	}

	crt, key, err := certs.NewRootCA(string(root))
	if err != nil {
		return Material{}, err
	}

	parsed, err := certs.ParseCertificate(crt)
	if err != nil {
		return Material{}, err
	}

	return Material{Crt: crt, Key: key, Fingerprint: certs.Fingerprint(parsed)}, nil
}

// fill records the cluster's current material as Old where the plan has none yet, and issues
// the client certificate from the new OS CA. It reports whether anything changed.
func (p *Plan) fill(current map[Root]Material, clientRoles []string, now time.Time) (bool, error) {
	changed := false

	if p.Created.IsZero() {
		p.Created = now.UTC().Truncate(time.Second)
		changed = true
	}

	for _, root := range p.Roots.List() {
		rp := p.Roots.Get(root)
		if rp.Old.Fingerprint != "" {
			continue
		}

		cur, ok := current[root]
		if !ok {
			return false, fmt.Errorf("no control-plane node holds the %s root (%s): nothing to rotate", root, root.issuingPath())
		}

		if cur.Fingerprint == rp.New.Fingerprint {
			return false, fmt.Errorf("roots.%s.new is the %s the cluster already issues with: put a new one in the plan, or remove the plan", root, root.what())
		}

		rp.Old = cur
		changed = true
	}

	if p.Roots.OS != nil && p.Client == nil {
		ca, err := certs.LoadCA(p.Roots.OS.New.Crt, p.Roots.OS.New.Key)
		if err != nil {
			return false, fmt.Errorf("roots.os.new: %w", err)
		}

		crt, key, err := ca.Issue(certs.ClientProfile(clientRoles, certs.ClientLifetime), now)
		if err != nil {
			return false, fmt.Errorf("issuing the client certificate: %w", err)
		}

		p.Client = &ClientCertificate{Crt: crt, Key: key}
		changed = true
	}

	return changed, nil
}

// sameRoots reports whether the plan rotates exactly these roots.
func (p *Plan) sameRoots(roots []Root) bool {
	return slices.Equal(p.Roots.List(), sortRoots(roots))
}

func rootNames(roots []Root) string {
	names := make([]string, 0, len(roots))
	for _, r := range roots {
		names = append(names, string(r))
	}

	return strings.Join(names, ", ")
}

// planExists reports whether path names an existing plan file.
func planExists(path string) (bool, error) {
	_, err := os.Stat(path)

	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("checking the rotation plan %s: %w", path, err)
	}
}
