package api

import (
	"context"
	"fmt"
	"net/url"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/siderolabs/grpc-proxy/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/nodepki/nodepki/api/common"
	"github.com/nodepki/nodepki/api/machine"
	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/version"
)

const (
	// platformName and platformMode fill Talos's PlatformInfo: nodepkid is a process of a node OS,
	// not the OS itself.
	platformName = "nodepki"
	platformMode = "process"

	// maxFanOut bounds the nodes of one call: each costs a connection and a call in flight.
	maxFanOut = 256

	// notAnOS is why most of machine.MachineService is not served.
	notAnOS = "nodepki is the PKI subsystem of a node OS, not the OS: of machine.MachineService it serves " +
		"Version, GenerateClientConfiguration and Kubeconfig; resources are read with `talosctl get` or `nodepkictl get`"
)

// machineServicePrefix starts the full names of Talos's MachineService methods.
const machineServicePrefix = "/machine.MachineService/"

// machineService implements, on the internal server, the part of Talos's machine.MachineService
// that talosctl's `version`, `config new` and `kubeconfig` call; callers are already authorized.
// Every reply carries the answering node in metadata.hostname, which talosctl prints as NODE.
type machineService struct {
	machine.UnimplementedMachineServiceServer

	server *Server
	build  *machine.VersionInfo
}

func newMachineService(s *Server) *machineService {
	build := &machine.VersionInfo{
		Tag:       version.Version,
		GoVersion: runtime.Version(),
		Os:        runtime.GOOS,
		Arch:      runtime.GOARCH,
	}

	if info, ok := debug.ReadBuildInfo(); ok {
		for _, setting := range info.Settings {
			switch setting.Key {
			case "vcs.revision":
				build.Sha = setting.Value
			case "vcs.time":
				build.Built = setting.Value
			}
		}
	}

	return &machineService{server: s, build: build}
}

func (m *machineService) metadata() *common.Metadata {
	return &common.Metadata{Hostname: m.server.nodeName()}
}

func (m *machineService) Version(context.Context, *emptypb.Empty) (*machine.VersionResponse, error) {
	return &machine.VersionResponse{Messages: []*machine.Version{{
		Metadata: m.metadata(),
		Version:  proto.CloneOf(m.build),
		Platform: &machine.PlatformInfo{Name: platformName, Mode: platformMode},
		Features: &machine.FeaturesInfo{Rbac: true},
	}}}, nil
}

// GenerateClientConfiguration is NodeService.GenerateClientConfiguration with Talos's messages.
func (m *machineService) GenerateClientConfiguration(ctx context.Context, req *machine.GenerateClientConfigurationRequest) (*machine.GenerateClientConfigurationResponse, error) {
	seconds, err := crtTTLSeconds(req.GetCrtTtl())
	if err != nil {
		return nil, err
	}

	resp, err := m.server.node.GenerateClientConfiguration(ctx, &node.GenerateClientConfigurationRequest{
		Roles:         req.GetRoles(),
		CrtTtlSeconds: seconds,
	})
	if err != nil {
		return nil, err
	}

	return &machine.GenerateClientConfigurationResponse{Messages: []*machine.GenerateClientConfiguration{{
		Metadata:    m.metadata(),
		Ca:          resp.GetCa(),
		Crt:         resp.GetCrt(),
		Key:         resp.GetKey(),
		Talosconfig: resp.GetTalosconfig(),
	}}}, nil
}

// crtTTLSeconds converts Talos's crt_ttl to NodeService's whole seconds (0: the default), with
// errors that name Talos's field.
func crtTTLSeconds(ttl *durationpb.Duration) (int64, error) {
	if ttl == nil {
		return 0, nil
	}

	if err := ttl.CheckValid(); err != nil {
		return 0, status.Errorf(codes.InvalidArgument, "crt_ttl: %v", err)
	}

	d := ttl.AsDuration()

	switch {
	case d < 0:
		return 0, status.Errorf(codes.InvalidArgument, "crt_ttl: %s is negative: give a positive lifetime, or none for one year", d)
	case d > 0 && d < time.Second:
		return 0, status.Errorf(codes.InvalidArgument, "crt_ttl: %s is shorter than one second", d)
	case d > maxClientTTL:
		return 0, status.Errorf(codes.InvalidArgument, "crt_ttl: %s is longer than the CA lifetime (%s)", d, maxClientTTL)
	default:
		return int64(d / time.Second), nil
	}
}

// workerRefusal answers a call that only control planes serve, naming the control plane to call.
func workerRefusal(cfg *machineconfig.Config, what string) error {
	msg := fmt.Sprintf("%s are issued by control-plane nodes only (they hold the CA keys) and this node is a %q node", what, machineTypeOf(cfg))

	if endpoint, host := controlPlaneEndpoint(cfg); host != "" {
		msg += fmt.Sprintf(": call the control plane instead, e.g. -n %s (the host of cluster.controlPlane.endpoint %s)", host, endpoint)
	} else {
		msg += ": address the call to a control-plane node with -n"
	}

	return status.Error(codes.FailedPrecondition, msg)
}

func controlPlaneEndpoint(cfg *machineconfig.Config) (endpoint, host string) {
	doc := cfg.Document()
	if doc == nil || doc.Cluster == nil || doc.Cluster.ControlPlane == nil {
		return "", ""
	}

	endpoint = doc.Cluster.ControlPlane.Endpoint

	u, err := url.Parse(endpoint)
	if err != nil {
		return endpoint, ""
	}

	return endpoint, u.Hostname()
}

func isMachineMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, machineServicePrefix)
}

func isServedMachineMethod(fullMethod string) bool {
	method := strings.TrimPrefix(fullMethod, machineServicePrefix)
	desc := &machine.MachineService_ServiceDesc

	return slices.ContainsFunc(desc.Methods, func(m grpc.MethodDesc) bool { return m.MethodName == method }) ||
		slices.ContainsFunc(desc.Streams, func(s grpc.StreamDesc) bool { return s.StreamName == method })
}

// isStreamingMachineMethod tells the proxy which calls to several nodes stream their replies
// (passed through as they come) rather than return one response (merged).
func isStreamingMachineMethod(fullMethod string) bool {
	method, ok := strings.CutPrefix(fullMethod, machineServicePrefix)
	if !ok {
		return false
	}

	return slices.ContainsFunc(machine.MachineService_ServiceDesc.Streams, func(s grpc.StreamDesc) bool { return s.StreamName == method })
}

// unservedMachineMethod is the answer to the methods of Talos's MachineService nodepki does not
// serve, naming the nodepki command to use where there is one.
func unservedMachineMethod(fullMethod string) error {
	method := strings.TrimPrefix(fullMethod, machineServicePrefix)

	var use string

	switch method {
	case "ApplyConfiguration":
		use = "`nodepkictl apply-config` or `nodepkictl patch machineconfig`"
	case "GenerateConfiguration":
		use = "`nodepkictl gen config`"
	case "EtcdSnapshot":
		use = "`nodepkictl etcd snapshot`"
	case "EtcdMemberList":
		use = "`nodepkictl etcd members`"
	case "Bootstrap":
		use = "`nodepkictl bootstrap`"
	case "Events":
		use = "`nodepkictl get <type> --watch` or `talosctl get <type> --watch`"
	}

	if use != "" {
		return status.Errorf(codes.Unimplemented, "%s is not served by nodepki: use %s", strings.TrimPrefix(fullMethod, "/"), use)
	}

	return status.Errorf(codes.Unimplemented, "%s is not served by nodepki: %s", strings.TrimPrefix(fullMethod, "/"), notAnOS)
}

// directMachine routes a MachineService call. Methods nodepki does not serve are answered here,
// by the node the caller reached. With `nodes` metadata (talosctl's form, even with one node) the
// call goes to every node named, as Talos's apid does: unary replies are merged into one response,
// streamed ones passed through, each labelled with its node; a node that fails contributes its
// error, labelled too, and does not fail the others.
func (s *Server) directMachine(c *caller, fullMethod string, md metadata.MD) (proxy.Mode, []proxy.Backend, error) {
	if !isServedMachineMethod(fullMethod) {
		return proxy.One2One, nil, unservedMachineMethod(fullMethod)
	}

	nodes := md.Get(NodesMetadataKey)
	if len(nodes) == 0 || len(md.Get(NodeMetadataKey)) > 0 {
		return s.directOne(c, md)
	}

	if len(nodes) > maxFanOut {
		return proxy.One2Many, nil, status.Errorf(codes.InvalidArgument, "nodes metadata names %d nodes: at most %d per call", len(nodes), maxFanOut)
	}

	targets := make([]string, 0, len(nodes))

	for _, name := range nodes {
		target, err := parseNodeName(name)
		if err != nil {
			return proxy.One2Many, nil, err
		}

		targets = append(targets, target)
	}

	// Each node is routed at once: a node that no record of this control plane names waits for the
	// other control planes' answer, and the nodes of one call share it (see peerMembers).
	backends := make([]proxy.Backend, len(nodes))

	var wg sync.WaitGroup

	for i, target := range targets {
		b := &labelledBackend{node: strings.TrimSpace(nodes[i])}
		backends[i] = b

		wg.Go(func() { b.backend, b.err = s.backendFor(c, target) })
	}

	wg.Wait()

	return proxy.One2Many, backends, nil
}

// labelledBackend is one node of a call to several nodes: it labels each reply with the node as
// the caller named it, and turns a failure into a labelled reply.
type labelledBackend struct {
	node    string
	backend proxy.Backend
	// err is why the node cannot be called (e.g. this node does not forward).
	err error
}

func (b *labelledBackend) String() string { return b.node }

func (b *labelledBackend) GetConnection(ctx context.Context, fullMethod string) (context.Context, *grpc.ClientConn, error) {
	if b.err != nil {
		return ctx, nil, b.err
	}

	return b.backend.GetConnection(ctx, fullMethod)
}

// AppendInfo appends common.Metadata{hostname} to every reply. A reply is the whole message of a
// stream, or an element of field 1 (`repeated ... messages = 1`) of a unary response; metadata is
// field 1 of every reply. In the protobuf encoding a repeated occurrence of an embedded message
// merges into the earlier one, so the appended metadata sets hostname and keeps what the node wrote.
func (b *labelledBackend) AppendInfo(streaming bool, resp []byte) ([]byte, error) {
	label, err := proto.Marshal(&common.Empty{Metadata: &common.Metadata{Hostname: b.node}})
	if err != nil {
		return nil, fmt.Errorf("error encoding the reply label: %w", err)
	}

	if streaming {
		return slices.Concat(resp, label), nil
	}

	out := make([]byte, 0, len(resp)+len(label)+8)

	for len(resp) > 0 {
		num, typ, tagLen := protowire.ConsumeTag(resp)
		if tagLen < 0 {
			return nil, fmt.Errorf("reply of %s: %w", b.node, protowire.ParseError(tagLen))
		}

		valueLen := protowire.ConsumeFieldValue(num, typ, resp[tagLen:])
		if valueLen < 0 {
			return nil, fmt.Errorf("reply of %s: %w", b.node, protowire.ParseError(valueLen))
		}

		if num == 1 && typ == protowire.BytesType {
			reply, _ := protowire.ConsumeBytes(resp[tagLen:])
			out = protowire.AppendTag(out, 1, protowire.BytesType)
			out = protowire.AppendVarint(out, uint64(len(reply)+len(label)))
			out = append(append(out, reply...), label...)
		} else {
			out = append(out, resp[:tagLen+valueLen]...)
		}

		resp = resp[tagLen+valueLen:]
	}

	return out, nil
}

// BuildError encodes a node's failure as a reply holding only metadata: hostname, error and its
// gRPC status, which Talos's client turns back into a per-node error.
func (b *labelledBackend) BuildError(streaming bool, err error) ([]byte, error) {
	reply := &common.Empty{Metadata: &common.Metadata{
		Hostname: b.node,
		Error:    err.Error(),
		Status:   status.Convert(err).Proto(),
	}}

	if streaming {
		return proto.Marshal(reply)
	}

	return proto.Marshal(&common.EmptyResponse{Messages: []*common.Empty{reply}})
}
