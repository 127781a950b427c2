package api

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/api/node"
	etcdpkg "github.com/nodepki/nodepki/pkg/etcd"
	"github.com/nodepki/nodepki/resources/etcd"
	"github.com/nodepki/nodepki/resources/pki"
)

const (
	// snapshotChunkSize keeps each message of a snapshot stream well under gRPC's 4 MiB limit.
	snapshotChunkSize = 1 << 20
	// memberStatusTimeout bounds the status call to each member in MemberList.
	memberStatusTimeout = 2 * time.Second
)

// etcdService implements node.EtcdService on the internal server against the etcd member this
// node runs, with the node's etcd admin certificate; callers are already authorized.
type etcdService struct {
	node.UnimplementedEtcdServiceServer

	server *Server
}

// memberStatus is the status of the member this node runs, or why there is none.
func (e *etcdService) memberStatus(ctx context.Context) (*etcd.MemberStatusSpec, error) {
	res, err := safe.StateGetByID[*etcd.MemberStatus](ctx, e.server.opts.State, etcd.LocalMemberID)
	if state.IsNotFoundError(err) {
		return nil, status.Errorf(codes.FailedPrecondition,
			"node %s does not run etcd: only control planes started with nodepkid --etcd-binary do", e.server.nodeName())
	}

	if err != nil {
		return nil, status.Errorf(codes.Internal, "error reading the etcd member status: %v", err)
	}

	return res.TypedSpec(), nil
}

func (e *etcdService) Bootstrap(ctx context.Context, _ *node.EtcdBootstrapRequest) (*node.EtcdBootstrapResponse, error) {
	member, err := e.memberStatus(ctx)
	if err != nil {
		return nil, err
	}

	if member.Running || member.MemberID != "" {
		return nil, status.Errorf(codes.AlreadyExists, "etcd on %s is already running (member %s): bootstrap is done once per cluster", e.server.nodeName(), member.MemberID)
	}

	request := etcd.NewBootstrap(etcd.BootstrapID)
	request.TypedSpec().RequestedAt = time.Now().UTC().Format(time.RFC3339)

	if err = e.server.opts.State.Create(ctx, request); err != nil {
		if state.IsConflictError(err) {
			return nil, status.Errorf(codes.AlreadyExists, "bootstrap of etcd on %s was already requested", e.server.nodeName())
		}

		return nil, status.Errorf(codes.Internal, "error requesting the etcd bootstrap: %v", err)
	}

	e.server.logger.Info("etcd bootstrap requested", zap.String("peer", peerAddress(ctx)))

	return &node.EtcdBootstrapResponse{Node: e.server.nodeName()}, nil
}

// client connects to the local member with the node's etcd admin certificate.
func (e *etcdService) client(ctx context.Context) (*clientv3.Client, error) {
	if _, err := e.memberStatus(ctx); err != nil {
		return nil, err
	}

	admin, err := safe.StateGetByID[*pki.NodeCertificate](ctx, e.server.opts.State, pki.CertEtcdAdmin)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "the etcd admin certificate is not available: %v", err)
	}

	spec := admin.TypedSpec()

	tlsConfig, err := etcdpkg.TLSConfig([]byte(spec.CABundle), []byte(spec.Certificate), []byte(spec.Key))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}

	client, err := etcdpkg.NewClient([]string{etcdpkg.ClientURL(e.server.opts.NodeAddress)}, tlsConfig)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v", err)
	}

	return client, nil
}

func (e *etcdService) MemberList(ctx context.Context, _ *node.EtcdMemberListRequest) (*node.EtcdMemberListResponse, error) {
	client, err := e.client(ctx)
	if err != nil {
		return nil, err
	}

	defer client.Close()

	list, err := client.MemberList(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "error listing etcd members through %s: %v", e.server.nodeName(), err)
	}

	resp := &node.EtcdMemberListResponse{Node: e.server.nodeName()}

	for _, m := range list.Members {
		member := &node.EtcdMember{
			Id:         etcdpkg.FormatID(m.ID),
			Name:       m.Name,
			PeerUrls:   m.PeerURLs,
			ClientUrls: m.ClientURLs,
			Learner:    m.IsLearner,
		}

		if len(m.ClientURLs) == 0 {
			member.Error = "not started"
		} else {
			h := etcdpkg.Status(ctx, client, m.ClientURLs[0], memberStatusTimeout)
			member.Healthy = h.Healthy()
			member.Leader = h.Err == nil && h.Leader == m.ID

			if h.Err != nil {
				member.Error = h.Err.Error()
			}
		}

		resp.Members = append(resp.Members, member)
	}

	return resp, nil
}

func (e *etcdService) Snapshot(_ *node.EtcdSnapshotRequest, stream node.EtcdService_SnapshotServer) error {
	ctx := stream.Context()

	client, err := e.client(ctx)
	if err != nil {
		return err
	}

	defer client.Close()

	snapshot, err := client.Snapshot(ctx)
	if err != nil {
		return status.Errorf(codes.Unavailable, "error taking an etcd snapshot on %s: %v", e.server.nodeName(), err)
	}

	defer snapshot.Close()

	e.server.logger.Info("etcd snapshot requested", zap.String("peer", peerAddress(ctx)))

	buf := make([]byte, snapshotChunkSize)

	for {
		n, readErr := io.ReadFull(snapshot, buf)
		if n > 0 {
			if err = stream.Send(&node.EtcdSnapshotChunk{Data: buf[:n]}); err != nil {
				return err
			}
		}

		switch {
		case readErr == nil:
		case errors.Is(readErr, io.EOF) || errors.Is(readErr, io.ErrUnexpectedEOF):
			return nil
		default:
			return status.Errorf(codes.Unavailable, "error reading the etcd snapshot on %s: %v", e.server.nodeName(), readErr)
		}
	}
}
