package rotate

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/trustd"
	"github.com/nodepki/nodepki/resources/pki"
)

// The join token (machine.token, what workers present to trustd) is rotated as a root without a
// certificate: its "issuing" material is machine.token, its accepted list machine.acceptedTokens
// (a nodepki extension trustd honours). Its phases are those of a CA, with one difference: a
// worker runs no trustd, so it accepts nothing and is "accepted" as soon as it holds the old token;
// it takes the new token at the switch, after every control plane accepts it, and is never given
// the old one to accept.
//
// Tokens are secrets that are short enough to guess against a digest when picked by hand: no
// output shows a token or anything derived from it.

// RootJoinToken is the trustd join token. It is not a pki root ID: nodes report no AcceptedCAs
// for it, and each step is verified against the control planes' trustd instead.
const RootJoinToken Root = "join-token"

// tokenFingerprint identifies a token in the plan and in phase derivation (hex SHA-256).
func tokenFingerprint(token string) string {
	sum := sha256.Sum256([]byte(token))

	return hex.EncodeToString(sum[:])
}

// readTokenRoot extracts the join token of one node's machine section.
func readTokenRoot(machine *machineconfig.MachineSection) rootConfig {
	rc := rootConfig{noTrustd: !machine.IsControlPlane()}

	for _, token := range machine.AcceptedTokens {
		if token != "" {
			rc.accepted = append(rc.accepted, acceptedEntry{pem: []byte(token), fingerprints: []string{tokenFingerprint(token)}})
		}
	}

	if machine.Token == "" {
		return rc
	}

	rc.present = true
	rc.issuingToken = machine.Token
	rc.issuingFingerprint = tokenFingerprint(machine.Token)

	return rc
}

// deriveTokenPhase places a node's join token between the plan's old and new one.
func deriveTokenPhase(rc rootConfig, oldFingerprint, newFingerprint string) (Phase, error) {
	switch rc.issuingFingerprint {
	case newFingerprint:
		if rc.accepts(oldFingerprint) {
			return PhaseSwitched, nil
		}

		return PhaseRetired, nil
	case oldFingerprint:
		if rc.noTrustd || rc.accepts(newFingerprint) {
			return PhaseAccepted, nil
		}

		return PhaseInitial, nil
	default:
		return 0, errors.New("machine.token is neither the old nor the new join token of the rotation plan: " +
			"the plan belongs to another cluster or the config was changed by hand")
	}
}

// comparablePhase is the phase a node is summarized and compared with the others at. A worker's
// join token is done at the switch (it never accepts the old token), so a worker holding the new
// token counts as switched: one step from a worker that does not hold it yet, and from control
// planes that refuse the old one already.
func comparablePhase(root Root, rc rootConfig, phase Phase) Phase {
	if root == RootJoinToken && rc.noTrustd && phase == PhaseRetired {
		return PhaseSwitched
	}

	return phase
}

// checkNewToken checks the plan's new token and returns its fingerprint. The message names the
// field and never quotes the token.
func checkNewToken(m Material) (string, error) {
	switch {
	case len(m.Crt) > 0 || len(m.Key) > 0:
		return "", errors.New("crt and key must be empty: the join token is a token, set token only")
	case m.Token == "":
		return "", errors.New(`token is required: the new join token, like "abcdef.0123456789abcdef"`)
	case !machineconfig.ValidToken(m.Token):
		return "", fmt.Errorf("token: %s", machineconfig.TokenFormatHint)
	}

	fingerprint := tokenFingerprint(m.Token)
	if m.Fingerprint != "" && m.Fingerprint != fingerprint {
		return "", errors.New("fingerprint does not match the token: remove it or fix it")
	}

	return fingerprint, nil
}

// checkOldToken checks the recorded old token, if any, and fills in its fingerprint. The old token
// is whatever the cluster had, so its shape is not checked.
func checkOldToken(m *Material) error {
	switch {
	case len(m.Crt) > 0 || len(m.Key) > 0:
		return errors.New("crt and key must be empty: the join token is a token")
	case m.Token == "" && m.Fingerprint != "":
		return errors.New("fingerprint is set without token: remove old, it is filled in from the cluster")
	case m.Token == "":
		return nil
	}

	fingerprint := tokenFingerprint(m.Token)
	if m.Fingerprint != "" && m.Fingerprint != fingerprint {
		return errors.New("fingerprint does not match the token")
	}

	m.Fingerprint = fingerprint

	return nil
}

// generateToken makes a new join token of the shape `gen secrets` makes.
func generateToken() (Material, error) {
	token, err := machineconfig.NewToken(rand.Reader)
	if err != nil {
		return Material{}, fmt.Errorf("error generating the join token: %w", err)
	}

	return Material{Token: token, Fingerprint: tokenFingerprint(token)}, nil
}

// tokenStepText and tokenVerifyText are what the steps do and check for the join token.
var (
	tokenStepText = map[Phase]string{
		PhaseAccepted: "add the new join token to the control planes' machine.acceptedTokens (workers run no trustd)",
		PhaseSwitched: "the new join token becomes machine.token, control planes first, then workers; trustd still accepts the old one",
		PhaseRetired:  "remove the old join token from machine.acceptedTokens",
	}
	tokenVerifyText = map[Phase]string{
		PhaseAccepted: "each control plane's trustd accepts the new join token",
		PhaseSwitched: "each node holds the new join token, trustd accepts both, workers' node API certificates in use",
		PhaseRetired:  "each control plane's trustd accepts the new join token and refuses the old one",
	}
)

// stepText is what a step does: the CA wording, or the join token's when it is rotated alone.
func (r *rotation) stepText(target Phase, generic string) string {
	if slices.Equal(r.plan.Roots.List(), []Root{RootJoinToken}) {
		return tokenStepText[target]
	}

	return generic
}

// verifyText is what a step checks, the join token's checks included.
func (r *rotation) verifyText(target Phase, generic string) string {
	switch {
	case r.plan.Roots.JoinToken == nil:
		return generic
	case slices.Equal(r.plan.Roots.List(), []Root{RootJoinToken}):
		return tokenVerifyText[target]
	default:
		return generic + "; " + tokenVerifyText[target]
	}
}

// change describes a root's rotation for the plan summary.
func (rp *RootPlan) change(root Root) string {
	if root == RootJoinToken {
		return "machine.token -> a new token (tokens are never printed; the plan file holds them)"
	}

	return fmt.Sprintf("%s %s -> %s", root.what(), shortFingerprint(rp.Old.Fingerprint), shortFingerprint(rp.New.Fingerprint))
}

// tokenPatch returns the RFC 6902 JSON patch (written as a YAML list of operations) that takes a
// node's join token to the target phase, or nil when it is there or past it. acceptedTokens is a
// list of strings, which a strategic merge patch cannot delete from; the patch instead tests the
// token and the list as read just before and replaces them, so that a config changed in between
// makes it fail rather than lose the change.
func tokenPatch(rc rootConfig, rp *RootPlan, target Phase) (*Patch, error) {
	phase, err := deriveTokenPhase(rc, rp.Old.Fingerprint, rp.New.Fingerprint)
	if err != nil {
		return nil, err
	}

	if phase >= target {
		return nil, nil //nolint:nilnil // nothing to do is not an error
	}

	current := make([]string, 0, len(rc.accepted))
	for _, e := range rc.accepted {
		current = append(current, string(e.pem))
	}

	token, accepted := rc.issuingToken, slices.Clone(current)

	without := func(list []string, t string) []string {
		return slices.DeleteFunc(list, func(s string) bool { return s == t })
	}

	switch target {
	case PhaseAccepted:
		accepted = append(without(accepted, rp.New.Token), rp.New.Token)
	case PhaseSwitched:
		token, accepted = rp.New.Token, without(accepted, rp.New.Token)

		if !rc.noTrustd && !slices.Contains(accepted, rp.Old.Token) {
			accepted = append(accepted, rp.Old.Token)
		}
	case PhaseRetired:
		token, accepted = rp.New.Token, without(without(accepted, rp.New.Token), rp.Old.Token)
	case PhaseInitial:
		return nil, errors.New("a rotation never goes back to the initial phase")
	}

	ops := tokenOps{{op: "test", path: "/machine/token", value: []string{rc.issuingToken}}}

	if len(current) > 0 {
		ops = append(ops, tokenOp{op: "test", path: "/machine/acceptedTokens", value: current, list: true})
	}

	if token != rc.issuingToken {
		ops = append(ops, tokenOp{op: "replace", path: "/machine/token", value: []string{token}})
	}

	switch {
	case len(accepted) > 0 && !slices.Equal(accepted, current):
		// add replaces an existing member, and creates a missing one.
		ops = append(ops, tokenOp{op: "add", path: "/machine/acceptedTokens", value: accepted, list: true})
	case len(accepted) == 0 && len(current) > 0:
		ops = append(ops, tokenOp{op: "remove", path: "/machine/acceptedTokens"})
	}

	data, err := ops.render(false)
	if err != nil {
		return nil, err
	}

	redacted, err := ops.render(true)
	if err != nil {
		return nil, err
	}

	return &Patch{Root: RootJoinToken, Data: data, Redacted: redacted}, nil
}

// tokenOp is one JSON patch operation on the token fields; value holds tokens (one, unless list).
type tokenOp struct {
	op, path string
	value    []string
	list     bool
}

type tokenOps []tokenOp

func (ops tokenOps) render(redact bool) ([]byte, error) {
	seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}

	for _, o := range ops {
		pairs := []keyValue{kv("op", scalar(o.op)), kv("path", scalar(o.path))}

		values := make([]*yaml.Node, 0, len(o.value))

		for _, v := range o.value {
			if redact {
				v = machineconfig.Redacted
			}

			values = append(values, scalar(v))
		}

		switch {
		case o.list:
			pairs = append(pairs, kv("value", &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: values}))
		case len(values) == 1:
			pairs = append(pairs, kv("value", values[0]))
		}

		seq.Content = append(seq.Content, mapping(pairs...))
	}

	var buf bytes.Buffer

	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(4)

	if err := enc.Encode(seq); err != nil {
		return nil, fmt.Errorf("encoding the join-token patch: %w", err)
	}

	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding the join-token patch: %w", err)
	}

	return buf.Bytes(), nil
}

// TrustdCluster is implemented by a Cluster that can reach the control planes' trustd (NodeAPI
// does); rotating the join token needs it, since trustd is where a token is accepted or refused.
type TrustdCluster interface {
	// TrustdProbe presents the token to trustd on the node, dialed directly and trusting rootsPEM
	// (the OS CAs). It returns nil when trustd accepts the token, and the refusal (codes.Unauthenticated)
	// or the failure otherwise. Nothing is signed and no member is recorded.
	TrustdProbe(ctx context.Context, node string, rootsPEM []byte, token string) error
}

// checkTrustdCluster refuses a join-token rotation on a Cluster that cannot verify it.
func checkTrustdCluster(cl Cluster, roots []Root) error {
	if !slices.Contains(roots, RootJoinToken) {
		return nil
	}

	if _, ok := cl.(TrustdCluster); !ok {
		return errors.New("the join token cannot be rotated here: this cluster connection cannot reach trustd to verify it")
	}

	return nil
}

// trustdRoots are the OS CAs trustd's certificate may chain to during the rotation.
func (r *rotation) trustdRoots() []byte {
	roots := slices.Clone(r.creds.current.CA)

	if rp := r.plan.Roots.OS; rp != nil {
		roots = append(append(roots, rp.Old.Crt...), rp.New.Crt...)
	}

	return roots
}

// inspectTrustd is the join token's preflight on a control plane: its trustd, dialed from here,
// accepts the node's own token, so that every later verification can be made.
func (r *rotation) inspectTrustd(ctx context.Context, in *inspection) {
	if !slices.Contains(r.opts.Roots, RootJoinToken) || !in.node.controlPlane {
		return
	}

	tc, _ := r.cl.(TrustdCluster)
	roots := r.creds.current.CA

	if err := tc.TrustdProbe(ctx, in.node.name, roots, in.node.cfg.Document().Machine.Token); err != nil {
		in.fatal = append(in.fatal, fmt.Sprintf("trustd cannot be asked from here to accept the node's own machine.token: %v "+
			"(rotate-ca verifies each join-token step on every control plane's trustd, port %d)", err, trustd.DefaultPort))

		return
	}

	in.notes = append(in.notes, "trustd accepts its token")
}

// checkJoinToken verifies the join token of a node at a phase: its config (as the node now runs
// it) is there or past it, and a control plane's trustd accepts the new token, accepts the old one until the
// retire step and refuses it after. A worker's node API certificate must still be in use: a worker
// never loses it to the rotation.
func (r *rotation) checkJoinToken(ctx context.Context, n *node, target Phase) (string, error) {
	rp := r.plan.Roots.JoinToken
	if rp == nil || !slices.Contains(n.roots, RootJoinToken) {
		return "", nil
	}

	raw, err := r.cl.MachineConfig(ctx, n.name)
	if err != nil {
		return "", fmt.Errorf("reading the machine config: %w", err)
	}

	cfg, err := machineconfig.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("the machine config cannot be parsed: %w", err)
	}

	phase, err := deriveTokenPhase(readTokenRoot(cfg.Document().Machine), rp.Old.Fingerprint, rp.New.Fingerprint)
	if err != nil {
		return "", err
	}

	if phase < target {
		return "", fmt.Errorf("the join token is %s, not yet %s", phase, target)
	}

	if n.noTrustd() {
		return r.checkWorkerCertificate(ctx, n)
	}

	tc, _ := r.cl.(TrustdCluster)
	roots := r.trustdRoots()

	if err = tc.TrustdProbe(ctx, n.name, roots, rp.New.Token); err != nil {
		return "", fmt.Errorf("trustd does not accept the new join token: %w", err)
	}

	err = tc.TrustdProbe(ctx, n.name, roots, rp.Old.Token)

	// A rerun may find a node past the target: it is judged by where it is.
	switch {
	case phase < PhaseRetired && err != nil:
		return "", fmt.Errorf("trustd does not accept the old join token any more: %w", err)
	case phase < PhaseRetired:
		return "trustd accepts the new and the old join token", nil
	case err == nil:
		return "", errors.New("trustd still accepts the old join token")
	case status.Code(err) != codes.Unauthenticated:
		return "", fmt.Errorf("checking that trustd refuses the old join token: %w", err)
	default:
		return "trustd accepts the new join token and refuses the old one", nil
	}
}

// noTrustd reports whether the node runs no trustd (a worker).
func (n *node) noTrustd() bool {
	return !n.controlPlane
}

// checkWorkerCertificate: the worker's node API certificate is issued and in use.
func (r *rotation) checkWorkerCertificate(ctx context.Context, n *node) (string, error) {
	statuses, err := r.cl.CertificateStatuses(ctx, n.name)
	if err != nil {
		return "", err
	}

	s, ok := statuses[pki.CertAPI]

	switch {
	case !ok:
		return "", errors.New("no node API certificate status")
	case s.State == pki.StateExpired || s.State == pki.StateUntrusted || s.State == pki.StatePending:
		return "", fmt.Errorf("the node API certificate is %s: %s", s.State, s.LastError)
	}

	return "node API certificate " + s.State, nil
}

// TrustdProbe implements TrustdCluster with an empty CSR: trustd authenticates the token before it
// reads the CSR, so InvalidArgument means the token was accepted and nothing was signed.
func (a *NodeAPI) TrustdProbe(ctx context.Context, node string, rootsPEM []byte, token string) error {
	parsed, err := client.ParseEndpoint(node)
	if err != nil {
		return err
	}

	port := a.opts.TrustdPort
	if port == 0 {
		port = trustd.DefaultPort
	}

	_, _, err = trustd.RequestCertificate(ctx, []string{net.JoinHostPort(parsed.Host, strconv.Itoa(port))}, rootsPEM, token, nil)

	switch {
	case err == nil:
		return errors.New("trustd signed an empty certificate request")
	case status.Code(err) == codes.InvalidArgument:
		return nil
	default:
		return err
	}
}
