package api

import (
	"context"
	"strings"

	"github.com/cosi-project/runtime/api/v1alpha1"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/api/machine"
	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/role"
)

var readRoles = []string{role.Admin, role.Operator, role.Reader}

// methodRoles lists, per method of the internal server, the roles allowed to call it. A method
// that is not listed is refused to everyone, so a service added later is closed until listed.
var methodRoles = map[string][]string{
	node.NodeService_Version_FullMethodName:                     role.All,
	node.NodeService_ApplyConfiguration_FullMethodName:          {role.Admin},
	node.NodeService_GenerateClientConfiguration_FullMethodName: {role.Admin},
	node.NodeService_RenewClientCertificate_FullMethodName:      role.All,
	node.NodeService_Kubeconfig_FullMethodName:                  {role.Admin},
	node.NodeService_Audit_FullMethodName:                       {role.Admin},

	machine.MachineService_Version_FullMethodName:                     role.All,
	machine.MachineService_GenerateClientConfiguration_FullMethodName: {role.Admin},
	machine.MachineService_Kubeconfig_FullMethodName:                  {role.Admin},

	node.EtcdService_Bootstrap_FullMethodName:  {role.Admin},
	node.EtcdService_MemberList_FullMethodName: role.All,
	node.EtcdService_Snapshot_FullMethodName:   {role.Admin, role.Operator, role.EtcdBackup},

	v1alpha1.State_Get_FullMethodName:   readRoles,
	v1alpha1.State_List_FullMethodName:  readRoles,
	v1alpha1.State_Watch_FullMethodName: readRoles,
}

// writeMethods of the COSI State service: the API is read-only, for every role.
var writeMethods = map[string]bool{
	v1alpha1.State_Create_FullMethodName:             true,
	v1alpha1.State_Update_FullMethodName:             true,
	v1alpha1.State_Destroy_FullMethodName:            true,
	v1alpha1.State_Teardown_FullMethodName:           true,
	v1alpha1.State_TeardownAndDestroy_FullMethodName: true,
}

// authorize takes the roles the director put in the metadata and checks them against methodRoles.
func authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	if writeMethods[fullMethod] {
		return nil, errWriteNotAllowed
	}

	md, _ := metadata.FromIncomingContext(ctx)
	roles, _ := parseRoles(md.Get(RoleMetadataKey))

	if !hasAnyRole(roles, methodRoles[fullMethod]) {
		return nil, notAuthorized(fullMethod, roles)
	}

	return withRoles(ctx, roles), nil
}

// notAuthorized names the roles a method needs and those the caller has.
func notAuthorized(fullMethod string, roles []string) error {
	method := strings.TrimPrefix(fullMethod, "/")

	allowed := methodRoles[fullMethod]
	if len(allowed) == 0 {
		return status.Errorf(codes.PermissionDenied, "not authorized: %s is open to no role", method)
	}

	has := "none"
	if len(roles) > 0 {
		has = strings.Join(roles, ", ")
	}

	return status.Errorf(codes.PermissionDenied, "not authorized: %s needs role %s; the caller's roles: %s", method, strings.Join(allowed, " or "), has)
}

func unaryAuthorizer(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}

	return handler(ctx, req)
}

func streamAuthorizer(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}

	return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
}

type contextStream struct {
	grpc.ServerStream

	ctx context.Context //nolint:containedctx // the stream's context, with the caller's roles
}

func (s *contextStream) Context() context.Context { return s.ctx }

// accessRule is the COSI state filter of the internal server (Talos's AccessPolicy): read-only,
// registered types and namespaces only, sensitive types for os:admin only.
func accessRule(st state.State) state.FilteringRule {
	return func(ctx context.Context, access state.Access) error {
		if !access.Verb.Readonly() {
			return errWriteNotAllowed
		}

		roles := rolesFromContext(ctx)
		if !hasAnyRole(roles, readRoles) {
			return errNotAuthorized
		}

		rd, err := safe.StateGet[*meta.ResourceDefinition](ctx, st,
			resource.NewMetadata(meta.NamespaceName, meta.ResourceDefinitionType, strings.ToLower(access.ResourceType), resource.VersionUndefined))

		switch {
		case state.IsNotFoundError(err):
			return status.Errorf(codes.PermissionDenied, "resource type %q is not supported", access.ResourceType)
		case err != nil:
			return status.Errorf(codes.Internal, "error looking up resource type %q: %v", access.ResourceType, err)
		}

		if rd.TypedSpec().Sensitivity == meta.Sensitive && !hasAnyRole(roles, []string{role.Admin}) {
			return status.Errorf(codes.PermissionDenied, "not authorized: resource type %q is sensitive and needs role %s", access.ResourceType, role.Admin)
		}

		_, err = st.Get(ctx, resource.NewMetadata(meta.NamespaceName, meta.NamespaceType, access.ResourceNamespace, resource.VersionUndefined))

		switch {
		case state.IsNotFoundError(err):
			return status.Errorf(codes.PermissionDenied, "namespace %q is not supported", access.ResourceNamespace)
		case err != nil:
			return status.Errorf(codes.Internal, "error looking up namespace %q: %v", access.ResourceNamespace, err)
		}

		return nil
	}
}
