package nodeapi_test

import (
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/state"
	talosclient "github.com/siderolabs/talos/pkg/machinery/client"
	talosconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/resources/pki"
)

// TestTalosGetSecurityStatus does what `talosctl get securitystatus -n <node>` does, with Talos's
// own client library and an os:reader credential: resolve the alias through the node's resource
// definitions, list the type without our protobuf types and read the YAML spec it prints.
func TestTalosGetSecurityStatus(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.130.2", 1)
	b := loadBundle(t, c)

	crt, key, err := b.NewClientCertificate([]string{role.Reader}, time.Hour)
	require.NoError(t, err)

	raw, err := clientconfig.New("reader", []string{c.ControlPlanes()[0]}, b.Certs.OS.Crt, crt, key).Bytes()
	require.NoError(t, err)

	cfg, err := talosconfig.FromBytes(raw)
	require.NoError(t, err)

	cl := talosClient(t, cfg)

	for i, node := range c.Addresses() {
		controlPlane := i == 0

		ctx := talosclient.WithNode(t.Context(), node)

		ns := resource.Namespace("")
		rd, err := cl.ResolveResourceKind(ctx, &ns, "securitystatus")
		require.NoError(t, err)
		assert.Equal(t, pki.SecurityStatusType, rd.TypedSpec().Type)

		// A worker's API certificate comes from trustd a moment after the cluster is ready.
		require.EventuallyWithT(t, func(collect *assert.CollectT) {
			list, err := cl.COSI.List(ctx, resource.NewMetadata(ns, rd.TypedSpec().Type, "", resource.VersionUndefined),
				state.WithListUnmarshalOptions(state.WithSkipProtobufUnmarshal()))
			if !assert.NoError(collect, err) || !assert.Len(collect, list.Items, 1, node) {
				return
			}

			item := list.Items[0]
			assert.Equal(collect, pki.SecurityStatusID, item.Metadata().ID())

			out, err := yaml.Marshal(item.Spec())
			require.NoError(collect, err)

			var spec pki.SecurityStatusSpec
			require.NoError(collect, yaml.Unmarshal(out, &spec), "%s", out)

			if controlPlane {
				assert.Equal(collect, []string{"os", "kubernetes", "etcd", "aggregator", "service-account"}, spec.CAKeys, node)
			} else {
				assert.Empty(collect, spec.CAKeys, "a worker holds no CA key")
			}

			assert.True(collect, spec.LeavesTrusted, "%s:\n%s", node, out)
			assert.True(collect, spec.LeavesUnexpired, "%s:\n%s", node, out)
			assert.Empty(collect, spec.Problems, node)
			assert.Equal(collect, []string{"TLS 1.3"}, spec.APITLSVersions)
			assert.Zero(collect, spec.RevocationListVersion)
			// The node API certificate lives 24 h by default, every other certificate longer.
			assert.Contains(collect, []string{"certificate/api", "certificate/api-client", "certificate/trustd"}, spec.EarliestExpiryOf, node)
			assert.WithinDuration(collect, time.Now().Add(24*time.Hour), spec.EarliestExpiry.Time, time.Minute)
		}, 20*time.Second, 100*time.Millisecond)

		// `talosctl get castatus`: the OS CA of the bundle, issuing, by its short fingerprint.
		rd, err = cl.ResolveResourceKind(ctx, &ns, "castatus")
		require.NoError(t, err)

		list, err := cl.COSI.List(ctx, resource.NewMetadata(ns, rd.TypedSpec().Type, "", resource.VersionUndefined),
			state.WithListUnmarshalOptions(state.WithSkipProtobufUnmarshal()))
		require.NoError(t, err)

		osFingerprint := certs.Fingerprint(mustParse(t, b.Certs.OS.Crt))
		found := false

		for _, item := range list.Items {
			if item.Metadata().ID() != "os-"+osFingerprint[:12] {
				continue
			}

			found = true

			out, err := yaml.Marshal(item.Spec())
			require.NoError(t, err)

			var spec pki.CAStatusSpec
			require.NoError(t, yaml.Unmarshal(out, &spec))
			assert.Equal(t, pki.CAStatusSpec{
				Root: "os", Subject: "O=talos", Fingerprint: osFingerprint, ShortFingerprint: osFingerprint[:12],
				NotBefore: spec.NotBefore, NotAfter: pki.NewTime(mustParse(t, b.Certs.OS.Crt).NotAfter), Role: pki.CARoleIssuing,
			}, spec)
		}

		assert.True(t, found, "%s lists the OS CA among its CAStatuses", node)
	}
}
