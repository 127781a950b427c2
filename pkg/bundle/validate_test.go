package bundle

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// TestBadBundles breaks one thing at a time in a valid bundle and checks that Validate names the
// field, that WriteFile refuses the bundle without creating the file (or a temp file), and that
// it leaves an existing file untouched even with force.
func TestBadBundles(t *testing.T) {
	t.Parallel()

	past := time.Now().Add(-48 * time.Hour)

	for _, tc := range []struct {
		name    string
		mutate  func(t *testing.T, b *Bundle)
		field   string
		message string
	}{
		{"cluster missing", func(_ *testing.T, b *Bundle) { b.Cluster = nil }, "cluster", msgRequired},
		{"cluster id missing", func(_ *testing.T, b *Bundle) { b.Cluster.ID = "" }, "cluster.id", msgRequired},
		{"cluster secret not base64", func(_ *testing.T, b *Bundle) { b.Cluster.Secret = "not*base64" }, "cluster.secret", "not valid base64"},
		{"cluster secret too short", func(_ *testing.T, b *Bundle) { b.Cluster.Secret = "c2hvcnQ=" }, "cluster.secret", "decodes to 5 bytes, want 32"},
		{"bootstrap token missing", func(_ *testing.T, b *Bundle) { b.Secrets.BootstrapToken = "" }, "secrets.bootstraptoken", msgRequired},
		{"bootstrap token upper case", func(_ *testing.T, b *Bundle) { b.Secrets.BootstrapToken = "ABCDEF.0123456789abcdef" }, "secrets.bootstraptoken", "not a valid token"},
		{"trustdinfo missing", func(_ *testing.T, b *Bundle) { b.TrustdInfo = nil }, "trustdinfo", msgRequired},
		{"trustd token too short", func(_ *testing.T, b *Bundle) { b.TrustdInfo.Token = "abcdef.0123" }, "trustdinfo.token", "not a valid token"},
		{
			"both encryption secrets",
			func(_ *testing.T, b *Bundle) { b.Secrets.AESCBCEncryptionSecret = b.Secrets.SecretboxEncryptionSecret },
			"secrets.aescbcencryptionsecret", "only one of",
		},
		{
			"no encryption secret",
			func(_ *testing.T, b *Bundle) { b.Secrets.SecretboxEncryptionSecret = "" },
			"secrets.secretboxencryptionsecret", msgRequired,
		},
		{"certs missing", func(_ *testing.T, b *Bundle) { b.Certs = nil }, "certs", msgRequired},
		{"os CA missing", func(_ *testing.T, b *Bundle) { b.Certs.OS = nil }, "certs.os", msgRequired},
		{"os crt not PEM", func(_ *testing.T, b *Bundle) { b.Certs.OS.Crt = []byte("hello") }, "certs.os.crt", "not PEM"},
		{"os key missing", func(_ *testing.T, b *Bundle) { b.Certs.OS.Key = nil }, "certs.os.key", msgRequired},
		{
			"os key of another CA",
			func(t *testing.T, b *Bundle) { b.Certs.OS.Key = generated(t).Certs.OS.Key },
			"certs.os.key", "key does not match the certificate in certs.os.crt",
		},
		{"k8s key is a certificate", func(_ *testing.T, b *Bundle) { b.Certs.K8s.Key = b.Certs.K8s.Crt }, "certs.k8s.key", `PEM block is "CERTIFICATE"`},
		{
			"k8s crt is not a CA",
			func(t *testing.T, b *Bundle) {
				crt, key := mintCert(t, testCA{})
				b.Certs.K8s = &machineconfig.CertificateAndKey{Crt: crt, Key: key}
			},
			"certs.k8s.crt", "not a CA",
		},
		{
			"etcd CA expired",
			func(t *testing.T, b *Bundle) {
				crt, key := mintCert(t, testCA{isCA: true, notBefore: past, notAfter: time.Now().Add(-time.Hour)})
				b.Certs.Etcd = &machineconfig.CertificateAndKey{Crt: crt, Key: key}
			},
			"certs.etcd.crt", "CA expired on",
		},
		{
			"aggregator CA not yet valid",
			func(t *testing.T, b *Bundle) {
				crt, key := mintCert(t, testCA{isCA: true, notBefore: time.Now().Add(time.Hour), notAfter: time.Now().Add(48 * time.Hour)})
				b.Certs.K8sAggregator = &machineconfig.CertificateAndKey{Crt: crt, Key: key}
			},
			"certs.k8saggregator.crt", "not valid before",
		},
		{
			"service-account key Ed25519",
			func(t *testing.T, b *Bundle) { b.Certs.K8sServiceAccount.Key = keyToPEM(t, newEd25519Key(t)) },
			"certs.k8sserviceaccount.key", "Ed25519 keys cannot sign",
		},
		{"service-account missing", func(_ *testing.T, b *Bundle) { b.Certs.K8sServiceAccount = nil }, "certs.k8sserviceaccount", msgRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			b := generated(t)
			tc.mutate(t, b)

			err := b.Validate()
			requireProblem(t, err, tc.field, tc.message)
			require.Len(t, problemsOf(t, err), 1, "one broken field gives one problem: %v", err)

			dir := t.TempDir()
			target := filepath.Join(dir, "secrets.yaml")

			err = b.WriteFile(target, false)
			requireProblem(t, err, tc.field, tc.message)
			assert.Empty(t, dirEntries(t, dir), "nothing is written for an invalid bundle")

			require.NoError(t, os.WriteFile(target, []byte("old bundle\n"), 0o600))

			err = b.WriteFile(target, true)
			requireProblem(t, err, tc.field, tc.message)

			data, err := os.ReadFile(target)
			require.NoError(t, err)
			assert.Equal(t, "old bundle\n", string(data), "the existing file is unchanged")
			assert.Equal(t, []string{"secrets.yaml"}, dirEntries(t, dir))
		})
	}
}

// TestParseBadBundles feeds broken secrets.yaml text to Parse and Load: every problem is reported
// with its field path, decoding problems (bad base64, unknown keys) as well as validation ones.
func TestParseBadBundles(t *testing.T) {
	t.Parallel()

	good, err := generated(t).Marshal()
	require.NoError(t, err)

	osCrtLine := lineStartingWith(t, good, "        crt: ", 4) // certs: etcd, k8s, k8saggregator, os

	for _, tc := range []struct {
		name  string
		yaml  string
		wants []string
	}{
		{
			"bad base64 in certs.os.crt",
			strings.Replace(string(good), osCrtLine, "        crt: not-base64!!", 1),
			[]string{"certs.os.crt: not valid base64"},
		},
		{
			"typo in a key",
			strings.Replace(string(good), osCrtLine, strings.Replace(osCrtLine, "crt:", "crtt:", 1), 1),
			[]string{"certs.os.crtt: unknown field", "known fields here are crt, key", "certs.os.crt: " + msgRequired},
		},
		{
			"typo at the top level",
			strings.Replace(string(good), "trustdinfo:", "trustinfo:", 1),
			[]string{"trustinfo: unknown field", "trustdinfo: " + msgRequired},
		},
		{
			"redacted key",
			strings.Replace(string(good), lineStartingWith(t, good, "        key: ", 5), "        key: '******'", 1),
			[]string{"certs.os.key: value is redacted"},
		},
		{
			"mapping where a string belongs",
			strings.Replace(string(good), "    token: ", "    token:\n        nested: ", 1),
			[]string{"trustdinfo.token: want a string"},
		},
		{
			"string where a mapping belongs",
			string(good[:strings.Index(string(good), "trustdinfo:")]) + "trustdinfo: abc\n" + string(good[strings.Index(string(good), "certs:"):]),
			[]string{"trustdinfo: want a mapping with keys token"},
		},
		{
			"duplicate key",
			strings.Replace(string(good), "secrets:\n", "secrets:\n    bootstraptoken: abcdef.0123456789abcdef\n", 1),
			[]string{"secrets.bootstraptoken: duplicate key"},
		},
		{
			"several problems at once",
			strings.NewReplacer("trustdinfo:", "trustdinf:", "    id: ", "    id: \n    ignored: ").Replace(string(good)),
			[]string{"trustdinf: unknown field", "cluster.ignored: unknown field", "trustdinfo: " + msgRequired},
		},
		{"empty", "\n", []string{"secrets bundle is empty"}},
		{"not a mapping", "- a\n- b\n", []string{"must be a YAML mapping"}},
		{"not YAML", "cluster: [\n", []string{"not valid YAML"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			_, err := Parse([]byte(tc.yaml))
			require.Error(t, err)

			for _, want := range tc.wants {
				assert.ErrorContains(t, err, want)
			}

			path := filepath.Join(t.TempDir(), "secrets.yaml")
			require.NoError(t, os.WriteFile(path, []byte(tc.yaml), 0o600))

			_, err = Load(path)
			require.ErrorContains(t, err, path)
			require.ErrorContains(t, err, tc.wants[0])
		})
	}
}

func TestValidateCollectsAllProblems(t *testing.T) {
	t.Parallel()

	b := generated(t)
	b.Cluster.ID = ""
	b.TrustdInfo.Token = "nope"
	b.Certs.OS.Key = b.Certs.K8s.Key
	b.Certs.Etcd.Crt = []byte("x")

	err := b.Validate()

	var verr *ValidationError
	require.ErrorAs(t, err, &verr)
	assert.Equal(t, []string{"cluster.id", "trustdinfo.token", "certs.etcd.crt", "certs.os.key"}, verr.Fields())
	assert.True(t, strings.HasPrefix(err.Error(), "invalid secrets bundle, 4 problems:\n  cluster.id: "), err.Error())

	_, err = Load(filepath.Join(t.TempDir(), "absent.yaml"))
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestValidationErrorsHoldNoSecrets(t *testing.T) {
	t.Parallel()

	b := generated(t)
	secretToken := "SECRET.TOKENVALUE123456"
	b.TrustdInfo.Token = secretToken
	b.Secrets.BootstrapToken = "x" + b.Secrets.BootstrapToken
	b.Cluster.Secret = "!" + b.Cluster.Secret

	err := b.Validate()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), secretToken)
	assert.NotContains(t, err.Error(), b.Secrets.BootstrapToken)
	assert.NotContains(t, err.Error(), b.Cluster.Secret[1:])
}

func requireProblem(t *testing.T, err error, field, message string) {
	t.Helper()

	for _, p := range problemsOf(t, err) {
		if p.Field == field && strings.Contains(p.Message, message) {
			return
		}
	}

	t.Fatalf("want a problem %q containing %q, got: %v", field, message, err)
}

func problemsOf(t *testing.T, err error) []Problem {
	t.Helper()

	var verr *ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("want a *ValidationError, got %T: %v", err, err)
	}

	return verr.Problems
}

// lineStartingWith returns the n-th (1-based) line of data that starts with prefix.
func lineStartingWith(t *testing.T, data []byte, prefix string, n int) string {
	t.Helper()

	for line := range strings.Lines(string(data)) {
		if strings.HasPrefix(line, prefix) {
			n--
			if n == 0 {
				return strings.TrimSuffix(line, "\n")
			}
		}
	}

	t.Fatalf("no line %d starting with %q", n, prefix)

	return ""
}
