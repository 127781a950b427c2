package api

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/role"
	"github.com/nodepki/nodepki/pkg/version"
	"github.com/nodepki/nodepki/resources/pki"
)

// maxClientTTL bounds GenerateClientConfiguration lifetimes: a client certificate cannot usefully
// outlive the CA that signs it.
const maxClientTTL = certs.CALifetime

// nodeService implements node.NodeService on the internal server; callers are already authorized.
type nodeService struct {
	node.UnimplementedNodeServiceServer

	server *Server

	// applyMu serializes ApplyConfiguration: read, validate and write are one step.
	applyMu sync.Mutex
}

func (n *nodeService) Version(ctx context.Context, _ *node.VersionRequest) (*node.VersionResponse, error) {
	machineType, err := n.server.machineType(ctx)
	if err != nil {
		return nil, err
	}

	return &node.VersionResponse{
		Version:       version.Version,
		Node:          n.server.nodeName(),
		MachineType:   machineType,
		UnixTimeNanos: time.Now().UnixNano(),
	}, nil
}

func (n *nodeService) ApplyConfiguration(ctx context.Context, req *node.ApplyConfigurationRequest) (*node.ApplyConfigurationResponse, error) {
	if len(req.GetData()) > 0 && len(req.GetPatches()) > 0 {
		return nil, status.Error(codes.InvalidArgument, "set either data (a whole config) or patches, not both")
	}

	if len(req.GetData()) == 0 && len(req.GetPatches()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "nothing to apply: set data (a whole config) or patches")
	}

	n.applyMu.Lock()
	defer n.applyMu.Unlock()

	current, err := n.server.currentConfig(ctx)
	if err != nil {
		return nil, err
	}

	next, write, err := proposedConfig(current, req)
	if err != nil {
		return nil, err
	}

	// A type change is checked first: it explains the validation errors it would cause.
	if oldType, newType := machineTypeOf(current), machineTypeOf(next); oldType != newType {
		return nil, status.Errorf(codes.InvalidArgument, "machine.type cannot change on a running node (%q -> %q)", oldType, newType)
	}

	if err = next.Validate(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "the new machine config is invalid: %v", err)
	}

	if next.IsControlPlane() {
		if err = kubernetes.CheckCluster(next.Document().Cluster); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "the new machine config is invalid: %v", err)
		}
	}

	diff, err := machineconfig.Diff(current, next)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "error computing the config diff: %v", err)
	}

	changed, err := configChanged(current, next)
	if err != nil {
		return nil, err
	}

	resp := &node.ApplyConfigurationResponse{Diff: diff, Changed: changed, Node: n.server.nodeName()}

	if req.GetDryRun() || !changed {
		return resp, nil
	}

	if err = n.server.opts.Config.SetMachineConfig(ctx, write); err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}

		return nil, status.Errorf(codes.Internal, "error saving the machine config: %v", err)
	}

	n.server.auditConfigChange(ctx, req, current, next)
	n.server.logger.Info("machine config applied", zap.Int("patches", len(req.GetPatches())), zap.Strings("roles", rolesFromContext(ctx)))

	return resp, nil
}

// proposedConfig builds the requested config and the bytes to store: a whole document is stored
// as sent (comments and layout kept), a patched one as re-encoded by machineconfig.
func proposedConfig(current *machineconfig.Config, req *node.ApplyConfigurationRequest) (*machineconfig.Config, []byte, error) {
	if data := req.GetData(); len(data) > 0 {
		next, err := machineconfig.Parse(data)
		if err != nil {
			return nil, nil, status.Errorf(codes.InvalidArgument, "the machine config cannot be parsed: %v", err)
		}

		return next, data, nil
	}

	patches := make([]machineconfig.Patch, 0, len(req.GetPatches()))

	for i, raw := range req.GetPatches() {
		p, err := machineconfig.LoadPatch(raw)
		if err != nil {
			return nil, nil, status.Errorf(codes.InvalidArgument, "patch %d: %v", i+1, err)
		}

		patches = append(patches, p)
	}

	next, err := machineconfig.Apply(current, patches...)
	if err != nil {
		return nil, nil, status.Errorf(codes.InvalidArgument, "the patches cannot be applied: %v", err)
	}

	data, err := next.Bytes()
	if err != nil {
		return nil, nil, status.Errorf(codes.Internal, "error encoding the patched config: %v", err)
	}

	return next, data, nil
}

func configChanged(current, next *machineconfig.Config) (bool, error) {
	a, err := current.Bytes()
	if err != nil {
		return false, status.Errorf(codes.Internal, "error encoding the current config: %v", err)
	}

	b, err := next.Bytes()
	if err != nil {
		return false, status.Errorf(codes.Internal, "error encoding the new config: %v", err)
	}

	return !bytes.Equal(a, b), nil
}

func machineTypeOf(cfg *machineconfig.Config) string {
	if doc := cfg.Document(); doc != nil && doc.Machine != nil {
		return doc.Machine.Type
	}

	return ""
}

func (n *nodeService) GenerateClientConfiguration(ctx context.Context, req *node.GenerateClientConfigurationRequest) (*node.GenerateClientConfigurationResponse, error) {
	roles, err := requestedRoles(req.GetRoles())
	if err != nil {
		return nil, err
	}

	ttl, err := requestedTTL(req.GetCrtTtlSeconds())
	if err != nil {
		return nil, err
	}

	cfg, err := n.server.currentConfig(ctx)
	if err != nil {
		return nil, err
	}

	if !cfg.IsControlPlane() {
		return nil, workerRefusal(cfg, "client configurations")
	}

	ca, err := n.issuingCA(ctx, pki.RootOS, "OS", "machine.ca")
	if err != nil {
		return nil, err
	}

	crt, key, err := ca.Issue(certs.ClientProfile(roles, ttl), time.Now())
	if err != nil {
		return nil, status.Errorf(codes.Internal, "error issuing the client certificate: %v", err)
	}

	talosconfig, err := clientconfig.New(contextName(roles, clusterName(cfg)), nil, ca.CrtPEM, crt, key).Bytes()
	if err != nil {
		return nil, status.Errorf(codes.Internal, "error encoding the client configuration: %v", err)
	}

	n.server.auditIssued(ctx, audit.TypeClientIssued, crt, ca.Crt, ttl)
	n.server.logger.Info("client certificate issued", zap.Strings("cert_roles", roles), zap.Duration("ttl", ttl),
		zap.Strings("caller_roles", rolesFromContext(ctx)))

	return &node.GenerateClientConfigurationResponse{Ca: ca.CrtPEM, Crt: crt, Key: key, Talosconfig: talosconfig}, nil
}

func requestedRoles(values []string) ([]string, error) {
	roles, err := role.Check(values)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "roles: %v", err)
	}

	return roles, nil
}

func requestedTTL(seconds int64) (time.Duration, error) {
	switch {
	case seconds < 0:
		return 0, status.Errorf(codes.InvalidArgument, "crt_ttl_seconds: %d is negative: give a lifetime in seconds, or 0 for one year", seconds)
	case seconds == 0:
		return certs.ClientLifetime, nil
	case seconds > int64(maxClientTTL/time.Second):
		return 0, status.Errorf(codes.InvalidArgument, "crt_ttl_seconds: %d is longer than the CA lifetime (%d s)", seconds, int64(maxClientTTL/time.Second))
	default:
		return time.Duration(seconds) * time.Second, nil
	}
}

func clusterName(cfg *machineconfig.Config) string {
	if doc := cfg.Document(); doc != nil && doc.Cluster != nil && doc.Cluster.ClusterName != "" {
		return doc.Cluster.ClusterName
	}

	return "nodepki"
}

// contextName follows talosctl: "<role>@<cluster>" for a single role, else the cluster name.
func contextName(roles []string, cluster string) string {
	if len(roles) == 1 {
		return fmt.Sprintf("%s@%s", strings.TrimPrefix(roles[0], "os:"), cluster)
	}

	return cluster
}
