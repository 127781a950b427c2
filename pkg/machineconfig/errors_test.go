package machineconfig_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// TestBadInput feeds broken configs and patches through Parse -> LoadPatch -> Apply -> Validate and
// checks that the first stage that refuses names the field or path at fault, and that the error
// carries no secret.
func TestBadInput(t *testing.T) {
	c := cluster(t)

	cp := func(fn func(doc map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return edit(t, c.controlPlane, fn) }
	}

	worker := func(fn func(doc map[string]any)) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return edit(t, c.worker, fn) }
	}

	raw := func(s string) func(t *testing.T) []byte {
		return func(*testing.T) []byte { return []byte(s) }
	}

	unchangedCP := cp(func(map[string]any) {})

	tests := []struct {
		name    string
		config  func(t *testing.T) []byte
		patch   string
		wantErr []string
	}{
		{
			name:    "invalid YAML names the line",
			config:  raw("version: v1alpha1\nmachine:\n  type: [worker\n"),
			wantErr: []string{"invalid YAML", "line 3"},
		},
		{
			name:    "empty file",
			config:  raw("# nothing here\n"),
			wantErr: []string{"empty"},
		},
		{
			name:    "no v1alpha1 document",
			config:  raw("apiVersion: v1alpha1\nkind: TrustedRootsConfig\nname: x\n"),
			wantErr: []string{"no v1alpha1 document"},
		},
		{
			name:    "two v1alpha1 documents",
			config:  raw("version: v1alpha1\n---\nversion: v1alpha1\n"),
			wantErr: []string{"document 2", "second v1alpha1 document"},
		},
		{
			name:    "duplicate key",
			config:  raw("version: v1alpha1\nmachine:\n  type: worker\n  type: controlplane\n"),
			wantErr: []string{"machine.type", "defined twice", "lines 3 and 4"},
		},
		{
			name:    "bad base64 in machine.ca.crt",
			config:  cp(func(d map[string]any) { section(d, "machine", "ca")["crt"] = "not base64!" }),
			wantErr: []string{"machine.ca.crt", "not valid base64"},
		},
		{
			name:    "bad base64 in an accepted CA",
			config:  cp(func(d map[string]any) { section(d, "cluster")["acceptedCAs"] = []any{map[string]any{"crt": "%%%"}} }),
			wantErr: []string{"cluster.acceptedCAs[0].crt", "not valid base64"},
		},
		{
			name:    "list where a string belongs",
			config:  cp(func(d map[string]any) { section(d, "machine")["token"] = []any{"a"} }),
			wantErr: []string{"machine.token", "want a string"},
		},
		{
			name:    "string where a list belongs",
			config:  cp(func(d map[string]any) { section(d, "machine")["certSANs"] = "a.example" }),
			wantErr: []string{"machine.certSANs", "want a list"},
		},
		{
			name: "admin kubeconfig lifetime not a duration",
			config: cp(func(d map[string]any) {
				section(d, "cluster")["adminKubeconfig"] = map[string]any{"certLifetime": "one year"}
			}),
			wantErr: []string{"cluster.adminKubeconfig.certLifetime", `"one year" is not a duration`, "8760h"},
		},
		{
			name: "admin kubeconfig lifetime negative",
			config: cp(func(d map[string]any) {
				section(d, "cluster")["adminKubeconfig"] = map[string]any{"certLifetime": "-1h"}
			}),
			wantErr: []string{"cluster.adminKubeconfig.certLifetime", "negative"},
		},
		{
			name:    "string where the service subnets list belongs",
			config:  cp(func(d map[string]any) { section(d, "cluster", "network")["serviceSubnets"] = "10.96.0.0/12" }),
			wantErr: []string{"cluster.network.serviceSubnets", "want a list"},
		},
		{
			name:    "wildcard certSAN trustd would refuse",
			config:  worker(func(d map[string]any) { section(d, "machine")["certSANs"] = []any{"node3.example.com", "*.bad"} }),
			wantErr: []string{"machine.certSANs[1]", `"*.bad"`, "wildcard names are not allowed"},
		},
		{
			name:    "certSAN that is no host name",
			config:  cp(func(d map[string]any) { section(d, "machine")["certSANs"] = []any{"under_score.example", "0.0.0.0"} }),
			wantErr: []string{"machine.certSANs[0]", `character '_'`, "machine.certSANs[1]", "unspecified address"},
		},
		{
			name:    "wrong version",
			config:  cp(func(d map[string]any) { d["version"] = "v1alpha2" }),
			wantErr: []string{"version:", `want "v1alpha1"`},
		},
		{
			name:    "unknown machine type",
			config:  cp(func(d map[string]any) { section(d, "machine")["type"] = "master" }),
			wantErr: []string{"machine.type", `unknown machine type "master"`, "init, controlplane, worker"},
		},
		{
			name:    "missing machine token",
			config:  cp(func(d map[string]any) { delete(section(d, "machine"), "token") }),
			wantErr: []string{"machine.token", "missing"},
		},
		{
			name:    "certificate lifetime below the minimum",
			config:  cp(func(d map[string]any) { section(d, "machine")["certificateLifetimes"] = map[string]any{"etcd": "5s"} }),
			wantErr: []string{"machine.certificateLifetimes.etcd", "5s is shorter than the minimum 10s"},
		},
		{
			name: "certificate lifetime beyond the issuing CA",
			config: cp(func(d map[string]any) {
				section(d, "machine")["certificateLifetimes"] = map[string]any{"kubernetes": "175200h"}
			}),
			wantErr: []string{"machine.certificateLifetimes.kubernetes", "longer than the remaining life of cluster.aggregatorCA.crt", "cluster.ca.crt", "rotate the CA"},
		},
		{
			name:    "certificate lifetime is not a duration",
			config:  cp(func(d map[string]any) { section(d, "machine")["certificateLifetimes"] = map[string]any{"api": "a day"} }),
			wantErr: []string{"machine.certificateLifetimes.api", "not a duration", "e.g. 8760h"},
		},
		{
			name:    "negative lifetime on a worker",
			config:  worker(func(d map[string]any) { section(d, "machine")["certificateLifetimes"] = map[string]any{"api": "-1s"} }),
			wantErr: []string{"machine.certificateLifetimes.api", `"-1s" is negative`},
		},
		{
			name:    "worker carrying machine.ca.key",
			config:  worker(func(d map[string]any) { section(d, "machine", "ca")["key"] = b64(c.bundle.Certs.OS.Key) }),
			wantErr: []string{"machine.ca.key", "not allowed on worker"},
		},
		{
			name:    "worker carrying cluster.ca.key",
			config:  worker(func(d map[string]any) { section(d, "cluster", "ca")["key"] = b64(c.bundle.Certs.K8s.Key) }),
			wantErr: []string{"cluster.ca.key", "not allowed on worker"},
		},
		{
			name: "worker carrying aggregator, etcd and service-account keys",
			config: worker(func(d map[string]any) {
				cl := section(d, "cluster")
				cl["aggregatorCA"] = map[string]any{"crt": b64(c.bundle.Certs.K8sAggregator.Crt), "key": b64(c.bundle.Certs.K8sAggregator.Key)}
				cl["etcd"] = map[string]any{"ca": map[string]any{"crt": b64(c.bundle.Certs.Etcd.Crt), "key": b64(c.bundle.Certs.Etcd.Key)}}
				cl["serviceAccount"] = map[string]any{"key": b64(c.bundle.Certs.K8sServiceAccount.Key)}
			}),
			wantErr: []string{"cluster.aggregatorCA.key", "cluster.etcd.ca.key", "cluster.serviceAccount.key"},
		},
		{
			name:    "worker without any OS CA",
			config:  worker(func(d map[string]any) { section(d, "machine", "ca")["crt"] = "" }),
			wantErr: []string{"machine.ca.crt", "trusted CA certificates are required"},
		},
		{
			name:    "key does not match the certificate",
			config:  cp(func(d map[string]any) { section(d, "machine", "ca")["key"] = b64(c.bundle.Certs.K8s.Key) }),
			wantErr: []string{"machine.ca.key", "does not match the certificate in machine.ca.crt"},
		},
		{
			name:    "issuing certificate is not a CA",
			config:  cp(func(d map[string]any) { section(d, "machine", "ca")["crt"] = b64(c.leafCrt) }),
			wantErr: []string{"machine.ca.crt", "not a CA"},
		},
		{
			name:    "key is not PEM",
			config:  cp(func(d map[string]any) { section(d, "cluster", "etcd", "ca")["key"] = b64([]byte("garbage")) }),
			wantErr: []string{"cluster.etcd.ca.key", "not PEM"},
		},
		{
			name:    "control plane without aggregator CA",
			config:  cp(func(d map[string]any) { delete(section(d, "cluster"), "aggregatorCA") }),
			wantErr: []string{"cluster.aggregatorCA.crt", "required on control-plane"},
		},
		{
			name:    "control plane without service-account key",
			config:  cp(func(d map[string]any) { delete(section(d, "cluster"), "serviceAccount") }),
			wantErr: []string{"cluster.serviceAccount.key", "required on control-plane"},
		},
		{
			name:    "control plane without etcd CA key",
			config:  cp(func(d map[string]any) { section(d, "cluster", "etcd", "ca")["key"] = "" }),
			wantErr: []string{"cluster.etcd.ca.key", "required on control-plane"},
		},
		{
			name:    "control plane without Kubernetes CA key",
			config:  cp(func(d map[string]any) { section(d, "cluster", "ca")["key"] = "" }),
			wantErr: []string{"cluster.ca.key", "required on control-plane"},
		},
		{
			name:    "endpoint is not https",
			config:  cp(func(d map[string]any) { section(d, "cluster", "controlPlane")["endpoint"] = "http://cp.test:6443" }),
			wantErr: []string{"cluster.controlPlane.endpoint", "not an https URL"},
		},
		{
			name: "accepted CA is not a certificate",
			config: cp(func(d map[string]any) {
				section(d, "machine")["acceptedCAs"] = []any{map[string]any{"crt": b64(c.bundle.Certs.OS.Key)}}
			}),
			wantErr: []string{"machine.acceptedCAs[0].crt", "want CERTIFICATE"},
		},
		{
			name: "accepted service-account key is not a key",
			config: cp(func(d map[string]any) {
				section(d, "cluster")["acceptedServiceAccountKeys"] = []any{map[string]any{"key": b64([]byte("nope"))}}
			}),
			wantErr: []string{"cluster.acceptedServiceAccountKeys[0].key", "not PEM"},
		},
		{
			name: "every problem is reported at once",
			config: cp(func(d map[string]any) {
				delete(section(d, "machine"), "token")
				section(d, "machine", "ca")["key"] = b64(c.bundle.Certs.K8s.Key)
				delete(section(d, "cluster"), "serviceAccount")
			}),
			wantErr: []string{"machine.token", "machine.ca.key", "cluster.serviceAccount.key"},
		},
		{
			name: "revoked certificate entries name the bad field",
			config: cp(func(d map[string]any) {
				section(d, "machine")["revokedCertificates"] = []any{
					map[string]any{"fingerprint": "abc"},
					map[string]any{"serial": "XYZ", "issuer": strings.Repeat("a", 64)},
					map[string]any{"serial": "0A1B"},
					map[string]any{"reason": "nothing to match"},
					map[string]any{"fingerprint": strings.Repeat("b", 64), "notAfter": "tomorrow"},
				}
			}),
			wantErr: []string{
				"machine.revokedCertificates[0].fingerprint", "machine.revokedCertificates[1].serial",
				"machine.revokedCertificates[2].issuer", "machine.revokedCertificates[3].fingerprint",
				"machine.revokedCertificates[4].notAfter",
			},
		},
		{
			name:    "JSON patch on a missing path",
			config:  unchangedCP,
			patch:   `[{"op": "replace", "path": "/machine/nothere/x", "value": 1}]`,
			wantErr: []string{"/machine/nothere/x"},
		},
		{
			name:    "JSON patch remove of a missing key",
			config:  unchangedCP,
			patch:   `[{"op": "remove", "path": "/cluster/nothere"}]`,
			wantErr: []string{"/cluster/nothere"},
		},
		{
			name:    "bad JSON patch syntax",
			config:  unchangedCP,
			patch:   `[{"op": "add", "path": "/machine/certSANs/-", "value": }]`,
			wantErr: []string{"invalid JSON patch"},
		},
		{
			name:    "unknown JSON patch op",
			config:  unchangedCP,
			patch:   `[{"op": "add", "path": "/machine/certSANs/-", "value": "a"}, {"op": "upsert", "path": "/machine/token"}]`,
			wantErr: []string{"operation 2", `unknown op "upsert"`, "/machine/token"},
		},
		{
			name:    "JSON patch add without value",
			config:  unchangedCP,
			patch:   "- op: add\n  path: /machine/certSANs/-\n",
			wantErr: []string{"/machine/certSANs/-", `missing "value"`},
		},
		{
			name: "JSON patch on a multi-document config",
			config: func(t *testing.T) []byte {
				return append(unchangedCP(t), "---\napiVersion: v1alpha1\nkind: TrustedRootsConfig\nname: x\n"...)
			},
			patch:   `[{"op": "add", "path": "/machine/certSANs/-", "value": "a"}]`,
			wantErr: []string{"multi-document"},
		},
		{
			name:    "strategic patch making a control plane a worker",
			config:  unchangedCP,
			patch:   "machine:\n  type: worker\n",
			wantErr: []string{"machine.ca.key", "cluster.ca.key", "cluster.serviceAccount.key", "not allowed on worker"},
		},
		{
			name:    "strategic patch with bad base64",
			config:  unchangedCP,
			patch:   "cluster:\n  ca:\n    crt: '***not base64'\n",
			wantErr: []string{"cluster.ca.crt", "not valid base64"},
		},
		{
			name:    "strategic patch deleting a missing key",
			config:  unchangedCP,
			patch:   "machine:\n  nothere:\n    $patch: delete\n",
			wantErr: []string{"machine.nothere", "nothing to delete"},
		},
		{
			name:    "strategic patch deleting a missing list element",
			config:  unchangedCP,
			patch:   "machine:\n  certSANs:\n    - $patch: delete\n      name: x\n",
			wantErr: []string{"machine.certSANs[0]", "nothing to delete"},
		},
		{
			name:    "unsupported $patch directive",
			config:  unchangedCP,
			patch:   "machine:\n  certSANs:\n    $patch: replace\n",
			wantErr: []string{"machine.certSANs", "only `$patch: delete`"},
		},
		{
			name:    "patch with only a comment",
			config:  unchangedCP,
			patch:   "# machine:\n#   certSANs: [x]\n",
			wantErr: []string{"the patch is empty"},
		},
		{
			name:    "patch that is a scalar",
			config:  unchangedCP,
			patch:   "just words",
			wantErr: []string{"document 1", "scalar"},
		},
		{
			name:    "strategic patch deleting the v1alpha1 document",
			config:  unchangedCP,
			patch:   "version: v1alpha1\n$patch: delete\n",
			wantErr: []string{"v1alpha1 document cannot be deleted"},
		},
	}

	require.GreaterOrEqual(t, len(tests), 20)

	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.config(t)

			var input *machineconfig.Config

			err := func() error {
				cfg, err := machineconfig.Parse(data)
				if err != nil {
					return err
				}

				if tc.patch == "" {
					return cfg.Validate()
				}

				input = cfg

				p, err := machineconfig.LoadPatch([]byte(tc.patch))
				if err != nil {
					return err
				}

				patched, err := machineconfig.Apply(cfg, p)
				if err != nil {
					return err
				}

				return patched.Validate()
			}()
			require.Error(t, err)

			for _, want := range tc.wantErr {
				assert.Contains(t, err.Error(), want)
			}

			for _, secret := range c.secrets() {
				assert.NotContains(t, err.Error(), strings.TrimSpace(secret), "error leaks a secret")
			}

			if input != nil {
				assert.Equal(t, decode(t, data), decode(t, mustBytes(t, input)), "a failed patch changed its input")
			}
		})
	}
}
