package api

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/nodepki/nodepki/api/common"
	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/resources/pki"
)

// kubeconfigFileName is the one file of MachineService.Kubeconfig's archive, as Talos names it.
const kubeconfigFileName = "kubeconfig"

// kubeconfigChunk bounds the bytes of one message of the Kubeconfig stream.
const kubeconfigChunk = 32 * 1024

// Kubeconfig issues the admin kubeconfig: a client certificate of the Kubernetes CA with the
// accepted Kubernetes CAs as its cluster's CA data, so it keeps working through a CA rotation.
func (n *nodeService) Kubeconfig(ctx context.Context, req *node.KubeconfigRequest) (*node.KubeconfigResponse, error) {
	cfg, err := n.server.currentConfig(ctx)
	if err != nil {
		return nil, err
	}

	if !cfg.IsControlPlane() {
		return nil, workerRefusal(cfg, "kubeconfigs")
	}

	ttl, err := kubeconfigTTL(req.GetCrtTtlSeconds(), cfg)
	if err != nil {
		return nil, err
	}

	ca, bundle, err := n.kubernetesCA(ctx)
	if err != nil {
		return nil, err
	}

	endpoint, _ := controlPlaneEndpoint(cfg)
	spec := kubeconfig.Admin(clusterName(cfg), endpoint, bundle, ttl)

	data, err := kubeconfig.Issue(ca, spec, time.Now())
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "%v", err)
	}

	n.server.auditKubeconfig(ctx, data, ca.Crt, ttl)
	n.server.logger.Info("admin kubeconfig issued", zap.String("context", spec.ContextName()), zap.Duration("ttl", ttl),
		zap.Strings("caller_roles", rolesFromContext(ctx)))

	return &node.KubeconfigResponse{Kubeconfig: data, Node: n.server.nodeName()}, nil
}

// kubeconfigTTL is the requested lifetime, or cluster.adminKubeconfig.certLifetime, or one year.
func kubeconfigTTL(seconds int64, cfg *machineconfig.Config) (time.Duration, error) {
	if seconds != 0 {
		return requestedTTL(seconds)
	}

	if c := cfg.Document().Cluster; c != nil && c.AdminKubeconfig != nil && c.AdminKubeconfig.CertLifetime > 0 {
		return time.Duration(c.AdminKubeconfig.CertLifetime), nil
	}

	return kubeconfig.AdminLifetime, nil
}

// kubernetesCA reads the issuing Kubernetes CA and the accepted Kubernetes CA bundle.
func (n *nodeService) kubernetesCA(ctx context.Context) (*certs.CA, []byte, error) {
	ca, err := n.issuingCA(ctx, pki.RootKubernetes, "Kubernetes", "cluster.ca")
	if err != nil {
		return nil, nil, err
	}

	accepted, err := safe.StateGetByID[*pki.AcceptedCA](ctx, n.server.opts.State, pki.RootKubernetes)

	switch {
	case state.IsNotFoundError(err):
		return nil, nil, status.Error(codes.FailedPrecondition, "the accepted Kubernetes CAs are not derived yet: retry shortly")
	case err != nil:
		return nil, nil, status.Errorf(codes.Internal, "error reading the accepted Kubernetes CAs: %v", err)
	}

	var bundle strings.Builder

	for _, c := range accepted.TypedSpec().Certificates {
		bundle.WriteString(strings.TrimSpace(c))
		bundle.WriteString("\n")
	}

	return ca, []byte(bundle.String()), nil
}

// Kubeconfig is NodeService.Kubeconfig as Talos serves it: a .tar.gz holding one file named
// kubeconfig, streamed in chunks. Talos's request has no lifetime, so the config's is used.
func (m *machineService) Kubeconfig(_ *emptypb.Empty, stream grpc.ServerStreamingServer[common.Data]) error {
	resp, err := m.server.node.Kubeconfig(stream.Context(), &node.KubeconfigRequest{})
	if err != nil {
		return err
	}

	archive, err := kubeconfigArchive(resp.GetKubeconfig(), time.Now())
	if err != nil {
		return status.Errorf(codes.Internal, "error packing the kubeconfig: %v", err)
	}

	for chunk := range slices.Chunk(archive, kubeconfigChunk) {
		if err := stream.Send(&common.Data{Metadata: m.metadata(), Bytes: chunk}); err != nil {
			return err
		}
	}

	return nil
}

// kubeconfigArchive is the .tar.gz of one file, kubeconfig, mode 0600.
func kubeconfigArchive(data []byte, now time.Time) ([]byte, error) {
	var buf bytes.Buffer

	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)

	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     kubeconfigFileName,
		Mode:     0o600,
		Size:     int64(len(data)),
		ModTime:  now,
	}); err != nil {
		return nil, fmt.Errorf("tar header: %w", err)
	}

	if _, err := tw.Write(data); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}

	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}

	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}

	return buf.Bytes(), nil
}
