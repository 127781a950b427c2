package nodeapi_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	talosmachine "github.com/siderolabs/talos/pkg/machinery/api/machine"
	talosclient "github.com/siderolabs/talos/pkg/machinery/client"
	talosconfig "github.com/siderolabs/talos/pkg/machinery/client/config"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/resources/pki"
)

// TestTalosctlMachineService makes the calls of `talosctl version`, `talosctl config new` and
// `talosctl kubeconfig` with Talos's own client library, through the control plane, as talosctl
// does (`-n` sets the `nodes` metadata).
func TestTalosctlMachineService(t *testing.T) {
	t.Parallel()

	c := startCluster(t, "127.0.81.2", 2)
	addrs := c.Addresses()
	cp, w1, w2 := addrs[0], addrs[1], addrs[2]

	cfg, err := talosconfig.Open(c.Talosconfig)
	require.NoError(t, err)

	admin := talosClient(t, cfg)

	t.Run("version of a worker through the control plane", func(t *testing.T) {
		for _, ctx := range []context.Context{talosclient.WithNode(t.Context(), w1), talosclient.WithNodes(t.Context(), w1)} {
			resp, err := admin.Version(ctx)
			require.NoError(t, err)
			require.Len(t, resp.GetMessages(), 1)

			msg := resp.GetMessages()[0]
			assert.Equal(t, w1, msg.GetMetadata().GetHostname())
			assert.NotEmpty(t, msg.GetVersion().GetTag())
			assert.NotEmpty(t, msg.GetVersion().GetGoVersion())
			assert.Equal(t, "nodepki", msg.GetPlatform().GetName())
			assert.Equal(t, "process", msg.GetPlatform().GetMode())
		}
	})

	t.Run("version of two nodes at once, each reply labelled", func(t *testing.T) {
		resp, err := admin.Version(talosclient.WithNodes(t.Context(), w1, w2))
		require.NoError(t, err)
		require.Len(t, resp.GetMessages(), 2)

		var nodes []string

		for _, msg := range resp.GetMessages() {
			nodes = append(nodes, msg.GetMetadata().GetHostname())
			assert.NotEmpty(t, msg.GetVersion().GetTag())
		}

		assert.ElementsMatch(t, []string{w1, w2}, nodes)
	})

	t.Run("config new: a reader credential that works against every node", func(t *testing.T) {
		resp, err := admin.GenerateClientConfiguration(talosclient.WithNodes(t.Context(), cp), &talosmachine.GenerateClientConfigurationRequest{
			Roles:  []string{role.Reader},
			CrtTtl: durationpb.New(2 * time.Hour),
		})
		require.NoError(t, err)
		require.Len(t, resp.GetMessages(), 1)

		msg := resp.GetMessages()[0]
		assert.Equal(t, cp, msg.GetMetadata().GetHostname())

		readerCfg, err := talosconfig.FromBytes(msg.GetTalosconfig())
		require.NoError(t, err)

		// As talosctl config new does: the endpoints of the context it was called with.
		readerCfg.Contexts[readerCfg.Context].Endpoints = []string{cp}

		crtPEM, err := base64.StdEncoding.DecodeString(readerCfg.Contexts[readerCfg.Context].Crt)
		require.NoError(t, err)

		crt := mustParse(t, crtPEM)
		assert.Equal(t, []string{role.Reader}, crt.Subject.Organization)
		assert.InDelta(t, (2 * time.Hour).Seconds(), crt.NotAfter.Sub(crt.NotBefore).Seconds(), certs.Backdate.Seconds()+60)

		reader := talosClient(t, readerCfg)

		for _, node := range addrs {
			v, err := reader.Version(talosclient.WithNodes(t.Context(), node))
			require.NoError(t, err, node)
			assert.Equal(t, node, v.GetMessages()[0].GetMetadata().GetHostname())

			statuses, err := safe.StateListAll[*pki.CertificateStatus](talosclient.WithNode(t.Context(), node), reader.COSI)
			require.NoError(t, err, node)
			assert.Positive(t, statuses.Len(), node)

			_, err = safe.StateListAll[*pki.RootSecret](talosclient.WithNode(t.Context(), node), reader.COSI)
			assert.Equal(t, codes.PermissionDenied, talosclient.StatusCode(err), "a reader reads no sensitive type: %v", err)
		}

		t.Run("os:reader is refused config new and kubeconfig", func(t *testing.T) {
			for _, ctx := range []context.Context{talosclient.WithNodes(t.Context(), cp), talosclient.WithNode(t.Context(), cp)} {
				_, err := reader.GenerateClientConfiguration(ctx, &talosmachine.GenerateClientConfigurationRequest{Roles: []string{role.Admin}})
				require.Error(t, err)
				assert.Equal(t, codes.PermissionDenied, talosclient.StatusCode(err), "%v", err)

				err = readKubeconfig(ctx, reader)
				require.Error(t, err)
				assert.Equal(t, codes.PermissionDenied, talosclient.StatusCode(err), "%v", err)
			}
		})
	})

	t.Run("a worker refuses both, naming the control plane", func(t *testing.T) {
		_, err := admin.GenerateClientConfiguration(talosclient.WithNodes(t.Context(), w1), &talosmachine.GenerateClientConfigurationRequest{Roles: []string{role.Reader}})
		require.Error(t, err)

		var nodeErr *talosclient.NodeError
		require.ErrorAs(t, err, &nodeErr)
		assert.Equal(t, w1, nodeErr.Node)
		assert.Equal(t, codes.FailedPrecondition, talosclient.StatusCode(nodeErr.Err), "%v", err)
		assert.Contains(t, err.Error(), "-n "+cp)

		err = readKubeconfig(talosclient.WithNodes(t.Context(), w1), admin)
		require.Error(t, err)
		assert.Equal(t, codes.FailedPrecondition, talosclient.StatusCode(err), "%v", err)
		assert.Contains(t, err.Error(), "-n "+cp)
	})

	t.Run("kubeconfig of a control plane: admin credentials of the Kubernetes CA", func(t *testing.T) {
		ctx := talosclient.WithNodes(t.Context(), cp)

		// Talos's client unpacks the .tar.gz and returns its one kubeconfig file.
		data, err := admin.Kubeconfig(ctx)
		require.NoError(t, err)

		kubeconfig, err := clientcmd.Load(data)
		require.NoError(t, err)

		accepted, err := safe.StateGetByID[*pki.AcceptedCA](talosclient.WithNode(t.Context(), cp), admin.COSI, pki.RootKubernetes)
		require.NoError(t, err)

		context := kubeconfig.Contexts[kubeconfig.CurrentContext]
		require.NotNil(t, context)

		cluster := kubeconfig.Clusters[context.Cluster]
		require.NotNil(t, cluster)

		caData, err := certs.ParseCertificates(cluster.CertificateAuthorityData)
		require.NoError(t, err)

		wantCAs, err := certs.ParseCertificates([]byte(strings.Join(accepted.TypedSpec().Certificates, "\n")))
		require.NoError(t, err)
		assert.Equal(t, wantCAs, caData, "the CA data is the accepted Kubernetes CA bundle")

		roots := x509.NewCertPool()
		for _, ca := range caData {
			roots.AddCert(ca)
		}

		crt, err := certs.ParseCertificate(kubeconfig.AuthInfos[context.AuthInfo].ClientCertificateData)
		require.NoError(t, err)
		assert.Equal(t, "admin", crt.Subject.CommonName)
		assert.Equal(t, []string{"system:masters"}, crt.Subject.Organization)

		_, err = crt.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		assert.NoError(t, err, "the admin certificate chains to the accepted Kubernetes CAs")
	})

	t.Run("other MachineService calls name the nodepki command", func(t *testing.T) {
		_, err := admin.ApplyConfiguration(talosclient.WithNodes(t.Context(), w1), &talosmachine.ApplyConfigurationRequest{})
		assert.Equal(t, codes.Unimplemented, talosclient.StatusCode(err), "%v", err)
		assert.Contains(t, err.Error(), "nodepkictl apply-config")

		err = admin.Reboot(talosclient.WithNodes(t.Context(), w1))
		assert.Equal(t, codes.Unimplemented, talosclient.StatusCode(err), "%v", err)
		assert.Contains(t, err.Error(), "not the OS")
	})

	t.Run("every other method of Talos's MachineService is Unimplemented with a reason", func(t *testing.T) {
		desc := talosmachine.MachineService_ServiceDesc

		var methods []string
		for _, m := range desc.Methods {
			methods = append(methods, m.MethodName)
		}

		for _, s := range desc.Streams {
			methods = append(methods, s.StreamName)
		}

		served := []string{"Version", "GenerateClientConfiguration", "Kubeconfig"}

		for _, method := range methods {
			if slices.Contains(served, method) {
				continue
			}

			fullMethod := "/" + desc.ServiceName + "/" + method
			err := callRaw(talosclient.WithNodes(t.Context(), w1), admin.Conn(), fullMethod)
			assert.Equal(t, codes.Unimplemented, status.Code(err), "%s: %v", method, err)
			assert.Contains(t, status.Convert(err).Message(), desc.ServiceName+"/"+method+" is not served by nodepki: ", method)
		}
	})

	t.Run("talosctl health, time, inspect and wipe: unknown services", func(t *testing.T) {
		for _, fullMethod := range []string{
			"/cluster.ClusterService/HealthCheck",
			"/time.TimeService/Time",
			"/inspect.InspectService/ControllerRuntimeDependencies",
			"/storage.StorageService/BlockDeviceWipe",
		} {
			err := callRaw(talosclient.WithNodes(t.Context(), w1), admin.Conn(), fullMethod)
			assert.Equal(t, codes.Unimplemented, status.Code(err), "%s: %v", fullMethod, err)
			assert.Contains(t, status.Convert(err).Message(), "unknown service "+strings.Split(fullMethod, "/")[1])
		}
	})
}

// callRaw makes a call with an empty request and reads its replies to the end: the error it
// returns is the call's (nil for a call that succeeded).
func callRaw(ctx context.Context, conn *grpc.ClientConn, fullMethod string) error {
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, fullMethod)
	if err != nil {
		return err
	}

	if err = stream.SendMsg(&emptypb.Empty{}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}

	if err = stream.CloseSend(); err != nil {
		return err
	}

	for {
		if err = stream.RecvMsg(&emptypb.Empty{}); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}

			return err
		}
	}
}

func talosClient(t *testing.T, cfg *talosconfig.Config) *talosclient.Client {
	t.Helper()

	cl, err := talosclient.New(t.Context(), talosclient.WithConfig(cfg))
	require.NoError(t, err)

	t.Cleanup(func() { cl.Close() })

	return cl
}

// readKubeconfig reads talosctl kubeconfig's stream to its end and returns its error.
func readKubeconfig(ctx context.Context, cl *talosclient.Client) error {
	r, err := cl.KubeconfigRaw(ctx)
	if err != nil {
		return err
	}

	defer r.Close()

	_, err = io.Copy(io.Discard, r)
	if err == nil {
		return errors.New("the kubeconfig stream ended without an error")
	}

	return err
}
