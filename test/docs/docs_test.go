package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/rotate"
)

// The documents use the default local-cluster addresses (127.0.0.2-5), so they run one at a time.

func TestREADME(t *testing.T) {
	runDocument(t, "README.md",
		check{"bin/nodepkictl cluster create --name demo --workers 2", func(t *testing.T, dir, out string) {
			assertMode(t, dir, 0o600, "secrets.yaml", "out/controlplane.yaml", "out/worker.yaml", "out/talosconfig")
			assertMode(t, dir, 0o755, "bin/nodepkid", "bin/nodepkictl")
			assert.Contains(t, out, `cluster "demo" is up: 1 control plane(s), 2 worker(s)`)
			assertAllValid(t, out, "127.0.0.2", "127.0.0.3", "127.0.0.4")
			assert.Contains(t, out, "- 127.0.0.3: applied", "the patch made with the talosconfig of gen config")
			assert.NoDirExists(t, filepath.Join(dir, "_out", "cluster"))
		}},
	)
}

func TestGettingStarted(t *testing.T) {
	runDocument(t, "docs/getting-started.md",
		check{"gen secrets -o secrets.yaml", func(t *testing.T, dir, _ string) {
			assertMode(t, dir, 0o600, "secrets.yaml")
		}},
		check{"gen config demo", func(t *testing.T, dir, _ string) {
			assertMode(t, dir, 0o600, "out/controlplane.yaml", "out/worker.yaml", "out/talosconfig")

			worker, err := os.ReadFile(filepath.Join(dir, "out", "worker.yaml"))
			require.NoError(t, err)

			cfg, err := machineconfig.Parse(worker)
			require.NoError(t, err)
			assert.Empty(t, cfg.Document().Machine.CA.Key, "the worker config carries no key")
			assert.Empty(t, cfg.Document().Cluster.CA.Key, "the worker config carries no key")
		}},
		check{"openssl verify -CAfile os-ca.crt admin.crt", func(t *testing.T, _, out string) {
			assert.Contains(t, out, "admin.crt: OK")
			assert.Regexp(t, regexp.MustCompile(`Subject: O ?= ?os:admin`), out)
			assert.Contains(t, out, "TLS Web Client Authentication")
			assert.NotContains(t, out, "TLS Web Server Authentication")
		}},
		check{"cluster create --name demo --controlplanes 1 --workers 2", func(t *testing.T, dir, out string) {
			assert.Contains(t, out, `cluster "demo" is up`)
			assert.NoFileExists(t, filepath.Join(dir, "_out", "cluster", "secrets.yaml"), "the cluster uses your bundle")
			assertSameOSCA(t, dir, "_out/cluster/talosconfig")
		}},
		check{"--address 127.0.0.5", func(t *testing.T, _, out string) {
			assert.Regexp(t, regexp.MustCompile(`(?m)^127\.0\.0\.5\s.*\sapi\s.*\svalid\s*$`), out)
		}},
		check{"openssl s_client", func(t *testing.T, _, out string) {
			assertAllValid(t, out, "127.0.0.2", "127.0.0.3", "127.0.0.4")
			assert.Contains(t, out, "type: NodeCertificates.pki.nodepki.dev", "the yaml of nodecertificate api")
			assert.Contains(t, out, "+        - node3.example.com", "the dry run shows the diff")
			assert.Contains(t, out, "verify return:1")
			assert.Contains(t, out, "DNS:node3.example.com")
		}},
		check{`"*.example.com"`, func(t *testing.T, _, out string) {
			assert.Contains(t, out, `machine.certSANs[1]: "*.example.com" wildcard names are not allowed`)
			assert.Contains(t, out, "refused, exit code 1")
		}},
		check{"cluster destroy --state _out/cluster", func(t *testing.T, dir, _ string) {
			assert.NoDirExists(t, filepath.Join(dir, "_out", "cluster"))
		}},
	)
}

// assertAllValid checks that `get certificatestatuses` listed every node and only valid certificates.
func assertAllValid(t *testing.T, out string, nodes ...string) {
	t.Helper()

	rows := 0

	for line := range strings.Lines(out) {
		fields := strings.Fields(line)
		if len(fields) < 5 || fields[1] != "pki" || fields[2] != "CertificateStatus" {
			continue
		}

		rows++

		assert.Equal(t, "valid", fields[len(fields)-1], line)
	}

	for _, node := range nodes {
		assert.Regexp(t, regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(node)+`\s+pki\s+CertificateStatus\s+api\s`), out)
	}

	assert.Positive(t, rows)
}

// assertSameOSCA checks that the talosconfig trusts the OS CA of the reader's secrets.yaml.
func assertSameOSCA(t *testing.T, dir, talosconfig string) {
	t.Helper()

	b, err := bundle.Load(filepath.Join(dir, "secrets.yaml"))
	require.NoError(t, err)

	cfg, err := clientconfig.Open(filepath.Join(dir, talosconfig))
	require.NoError(t, err)

	cctx, err := cfg.Current()
	require.NoError(t, err)

	ca, err := cctx.CAPEM()
	require.NoError(t, err)
	assert.Equal(t, string(b.Certs.OS.Crt), string(ca))
}

// osFingerprint is the fingerprint of the OS CA of a secrets bundle.
func osFingerprint(t *testing.T, path string) string {
	t.Helper()

	b, err := bundle.Load(path)
	require.NoError(t, err)

	crt, err := certs.ParseCertificate(b.Certs.OS.Crt)
	require.NoError(t, err)

	return certs.Fingerprint(crt)
}

// loadPlan reads a rotation plan.
func loadPlan(t *testing.T, path string) *rotate.Plan {
	t.Helper()

	p, err := rotate.LoadPlan(path)
	require.NoError(t, err)

	return p
}

func TestRotation(t *testing.T) {
	// The new OS CA of the procedure by hand, read while new-secrets.yaml exists.
	var manualFP string

	keyFiles := []string{
		"new-secrets.yaml", "new-client", "transitional-talosconfig", "final-talosconfig",
		"accept.yaml", "switch-controlplane.yaml", "switch-worker.yaml", "retire.yaml",
	}

	runDocument(t, "docs/rotation.md",
		check{"nodepkictl cluster create --name demo --workers 2 --state _out/cluster --with-secrets secrets.yaml", func(t *testing.T, dir, out string) {
			assert.Contains(t, out, `cluster "demo" is up`)
			assertMode(t, dir, 0o600, "secrets.yaml")
		}},
		check{"# what would happen", func(t *testing.T, dir, out string) {
			assert.Contains(t, out, "dry run: nothing was changed")
			assert.Contains(t, out, "rotation complete: os")
			assertMode(t, dir, 0o600, "_out/cluster/rotate-ca-plan.yaml", "_out/cluster/talosconfig", "secrets.yaml")

			plan := loadPlan(t, filepath.Join(dir, "_out", "cluster", "rotate-ca-plan.yaml"))
			require.NotNil(t, plan.Completed)
			assert.Equal(t, plan.Roots.OS.New.Fingerprint, osFingerprint(t, filepath.Join(dir, "secrets.yaml")), "secrets.yaml kept in step")

			backups, err := filepath.Glob(filepath.Join(dir, "secrets.yaml.*.bak"))
			require.NoError(t, err)
			require.Len(t, backups, 1)
			assertMode(t, dir, 0o600, filepath.Base(backups[0]))
			assertSameOSCA(t, dir, "_out/cluster/talosconfig")
		}},
		check{"--plan kubernetes-plan.yaml", func(t *testing.T, dir, out string) {
			assert.Regexp(t, regexp.MustCompile(`the rotation of os in \S+/rotate-ca-plan.yaml is complete \(finished \S+\): nothing to do`), out)
			assert.Contains(t, out, "is a completed rotation of os")
			assert.Contains(t, out, "not of kubernetes: to start a new rotation, pass a new --plan FILE")
			assert.Contains(t, out, "refused, exit code 1")
			assert.Contains(t, out, "rotation complete: kubernetes")
			assertMode(t, dir, 0o600, "kubernetes-plan.yaml")
			assert.NotNil(t, loadPlan(t, filepath.Join(dir, "kubernetes-plan.yaml")).Completed)
		}},
		check{"--plan join-token-plan.yaml", func(t *testing.T, dir, out string) {
			assert.Contains(t, out, "rotation complete: join-token")
			assertMode(t, dir, 0o600, "join-token-plan.yaml", "secrets.yaml")

			plan := loadPlan(t, filepath.Join(dir, "join-token-plan.yaml"))
			require.NotNil(t, plan.Completed)
			assert.NotContains(t, out, plan.Roots.JoinToken.Old.Token)
			assert.NotContains(t, out, plan.Roots.JoinToken.New.Token)

			b, err := bundle.Load(filepath.Join(dir, "secrets.yaml"))
			require.NoError(t, err)
			assert.Equal(t, plan.Roots.JoinToken.New.Token, b.TrustdInfo.Token, "secrets.yaml kept in step")
		}},
		check{"umask 077", func(t *testing.T, dir, out string) {
			assertMode(t, dir, 0o600, "new-secrets.yaml")
			manualFP = osFingerprint(t, filepath.Join(dir, "new-secrets.yaml"))
			assert.Contains(t, out, "-> "+manualFP)
		}},
		check{"write_talosconfig transitional-talosconfig", func(t *testing.T, dir, _ string) {
			assertMode(t, dir, 0o600, "accept.yaml", "transitional-talosconfig", "new-client/talosconfig")
		}},
		check{"cat > switch-controlplane.yaml", func(t *testing.T, dir, _ string) {
			assertMode(t, dir, 0o600, "switch-controlplane.yaml", "switch-worker.yaml")
		}},
		check{"cat > retire.yaml", func(t *testing.T, dir, out string) {
			assertMode(t, dir, 0o600, "final-talosconfig", "retire.yaml")
			// The last loop prints each node's accepted OS CAs: the new one only.
			_, last, _ := strings.Cut(out, "- 127.0.0.4: applied\n")
			fingerprints := regexp.MustCompile(`"([0-9a-f]{64})"`).FindAllStringSubmatch(last, -1)
			require.Len(t, fingerprints, 3, "one accepted CA for each node:\n%s", out)

			for _, fp := range fingerprints {
				assert.Equal(t, manualFP, fp[1])
			}
		}},
		check{`config remove "$CONTEXT"`, func(t *testing.T, dir, out string) {
			for _, name := range keyFiles {
				assert.NoFileExists(t, filepath.Join(dir, name))
				assert.NoDirExists(t, filepath.Join(dir, name))
			}

			cfg, err := clientconfig.Open(filepath.Join(dir, "_out", "cluster", "talosconfig"))
			require.NoError(t, err)
			assert.Equal(t, []string{"demo"}, cfg.ContextNames(), "the rotated context is replaced, not added to")
			assert.Equal(t, "demo", cfg.Context)
			assert.Equal(t, []string{"127.0.0.2"}, cfg.Contexts["demo"].Endpoints)
			assert.Equal(t, []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}, cfg.Contexts["demo"].Nodes)

			ca, err := cfg.Contexts["demo"].CAPEM()
			require.NoError(t, err)

			crt, err := certs.ParseCertificate(ca)
			require.NoError(t, err)
			assert.Equal(t, manualFP, certs.Fingerprint(crt))

			// The table shows fingerprints by their first 12 hex digits.
			short := manualFP[:12]

			for _, node := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
				assert.Regexp(t, regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(node)+`\s+pki\s+AcceptedCA\s+os\s+\d+\s+`+short+`\s+\["`+short+`"\]$`), out,
					"the accepted CAs of every node, through the replaced context")
			}
		}},
		check{"nodepkictl cluster destroy --state _out/cluster", func(t *testing.T, dir, _ string) {
			assert.NoDirExists(t, filepath.Join(dir, "_out", "cluster"))
		}},
	)
}
