package bundle

import (
	stdx509 "crypto/x509"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// Problem is one thing wrong with a bundle, at a field path such as "certs.os.key".
type Problem struct {
	Field   string
	Message string
}

func (p Problem) Error() string {
	return p.Field + ": " + p.Message
}

// ValidationError lists every problem found in a bundle, so one run shows all that needs fixing.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	if len(e.Problems) == 1 {
		return "invalid secrets bundle: " + e.Problems[0].Error()
	}

	var sb strings.Builder

	fmt.Fprintf(&sb, "invalid secrets bundle, %d problems:", len(e.Problems))

	for _, p := range e.Problems {
		sb.WriteString("\n  ")
		sb.WriteString(p.Error())
	}

	return sb.String()
}

// Fields returns the field paths that have problems, in order.
func (e *ValidationError) Fields() []string {
	out := make([]string, 0, len(e.Problems))
	for _, p := range e.Problems {
		out = append(out, p.Field)
	}

	return out
}

const msgRequired = "required field is missing"

// problems accumulates Problems.
type problems []Problem

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}

	return &ValidationError{Problems: slices.Clone(ps)}
}

// Validate checks the whole bundle and reports every problem (a *ValidationError): missing
// fields, malformed tokens and secrets, certificates that are not CAs or not valid now, and keys
// that do not match their certificates. Unlike Talos it also checks token formats.
func (b *Bundle) Validate() error {
	return b.validateAt(time.Now()).err()
}

func (b *Bundle) validateAt(now time.Time) problems {
	var ps problems

	if b.Cluster == nil {
		ps.add("cluster", msgRequired)
	} else {
		if b.Cluster.ID == "" {
			ps.add("cluster.id", msgRequired)
		}

		checkSecret(&ps, "cluster.secret", b.Cluster.Secret, []int{clusterSecretSize})
	}

	if b.Secrets == nil {
		ps.add("secrets", msgRequired)
	} else {
		checkToken(&ps, "secrets.bootstraptoken", b.Secrets.BootstrapToken)

		switch secretbox, aescbc := b.Secrets.SecretboxEncryptionSecret, b.Secrets.AESCBCEncryptionSecret; {
		case secretbox == "" && aescbc == "":
			ps.add("secrets.secretboxencryptionsecret", "%s (or set secrets.aescbcencryptionsecret instead)", msgRequired)
		case secretbox != "" && aescbc != "":
			ps.add("secrets.aescbcencryptionsecret",
				"only one of secrets.secretboxencryptionsecret and secrets.aescbcencryptionsecret is allowed: remove one")
		case secretbox != "":
			checkSecret(&ps, "secrets.secretboxencryptionsecret", secretbox, []int{encryptionSecretSize})
		default:
			checkSecret(&ps, "secrets.aescbcencryptionsecret", aescbc, []int{16, 24, 32})
		}
	}

	if b.TrustdInfo == nil {
		ps.add("trustdinfo", msgRequired)
	} else {
		checkToken(&ps, "trustdinfo.token", b.TrustdInfo.Token)
	}

	if b.Certs == nil {
		ps.add("certs", msgRequired)

		return ps
	}

	checkCA(&ps, "certs.etcd", b.Certs.Etcd, now)
	checkCA(&ps, "certs.k8s", b.Certs.K8s, now)
	checkCA(&ps, "certs.k8saggregator", b.Certs.K8sAggregator, now)
	checkCA(&ps, "certs.os", b.Certs.OS, now)

	switch {
	case b.Certs.K8sServiceAccount == nil:
		ps.add("certs.k8sserviceaccount", msgRequired)
	case len(b.Certs.K8sServiceAccount.Key) == 0:
		ps.add("certs.k8sserviceaccount.key", msgRequired)
	default:
		if msg := serviceAccountKeyProblem(b.Certs.K8sServiceAccount.Key); msg != "" {
			ps.add("certs.k8sserviceaccount.key", "%s", msg)
		}
	}

	return ps
}

func checkToken(ps *problems, field, token string) {
	switch {
	case token == "":
		ps.add(field, msgRequired)
	case !machineconfig.ValidToken(token):
		ps.add(field, "%s", machineconfig.TokenFormatHint)
	}
}

func checkSecret(ps *problems, field, secret string, sizes []int) {
	if secret == "" {
		ps.add(field, msgRequired)

		return
	}

	raw, err := base64.StdEncoding.DecodeString(secret)
	if err != nil {
		ps.add(field, "not valid base64: want the standard base64 encoding of %d random bytes", sizes[len(sizes)-1])

		return
	}

	if !slices.Contains(sizes, len(raw)) {
		ps.add(field, "decodes to %d bytes, want %s", len(raw), joinInts(sizes))
	}
}

func joinInts(sizes []int) string {
	parts := make([]string, len(sizes))
	for i, s := range sizes {
		parts[i] = fmt.Sprint(s)
	}

	return strings.Join(parts, " or ")
}

func checkCA(ps *problems, field string, pair *machineconfig.CertificateAndKey, now time.Time) {
	if pair == nil {
		ps.add(field, msgRequired)

		return
	}

	crtField, keyField := field+".crt", field+".key"

	var crt *stdx509.Certificate

	if len(pair.Crt) == 0 {
		ps.add(crtField, msgRequired)
	} else if parsed, err := certs.ParseCertificate(pair.Crt); err != nil {
		ps.add(crtField, "%v", err)
	} else if msg := caProblem(parsed, now); msg != "" {
		ps.add(crtField, "%s", msg)
	} else {
		crt = parsed
	}

	if len(pair.Key) == 0 {
		ps.add(keyField, msgRequired)

		return
	}

	key, err := certs.ParsePrivateKey(pair.Key)
	if err != nil {
		ps.add(keyField, "%v", err)

		return
	}

	if crt != nil && !certs.KeyMatchesCertificate(crt, key) {
		ps.add(keyField, "key does not match the certificate in %s", crtField)
	}
}

// caProblem says why crt cannot serve as a root CA at time now, or "".
func caProblem(crt *stdx509.Certificate, now time.Time) string {
	switch {
	case !crt.IsCA:
		return "certificate is not a CA (basic constraints CA:FALSE)"
	case now.After(crt.NotAfter):
		return fmt.Sprintf("CA expired on %s: rotate it (nodepkictl rotate-ca)", crt.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(crt.NotBefore):
		return fmt.Sprintf("CA is not valid before %s: check the clock", crt.NotBefore.UTC().Format(time.RFC3339))
	default:
		return ""
	}
}
