package rotate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/resource/meta"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/resources/pki"
)

// Cluster is how a rotation reaches the nodes. NodeAPI implements it over the node API; the
// orchestration is tested against fakes.
type Cluster interface {
	// UseCredentials sets the credentials of the calls below, best first: a call the entry node
	// refuses as unauthenticated is made again with the next credentials.
	UseCredentials(ctx context.Context, creds []Credentials) error
	// Version asks a node what it is and what its clock says.
	Version(ctx context.Context, node string) (NodeVersion, error)
	// MachineConfig reads a node's machine config document (os:admin).
	MachineConfig(ctx context.Context, node string) ([]byte, error)
	// ApplyPatches applies strategic merge patches to a node's current machine config, as one change.
	ApplyPatches(ctx context.Context, node string, patches [][]byte) error
	// AcceptedCAs reads a node's AcceptedCAs, by root.
	AcceptedCAs(ctx context.Context, node string) (map[Root]pki.AcceptedCASpec, error)
	// CertificateStatuses reads a node's CertificateStatuses, by certificate ID.
	CertificateStatuses(ctx context.Context, node string) (map[string]pki.CertificateStatusSpec, error)
	// Probe makes one call to a node with the credentials over a new connection (so a new TLS
	// handshake in each direction): dialing the node itself when direct, else through the
	// endpoints with `node` metadata.
	Probe(ctx context.Context, node string, creds Credentials, direct bool) error
	// Members lists the cluster members the control plane behind one endpoint knows. A node
	// that does not record members (an older version) yields none and no error.
	Members(ctx context.Context, endpoint string) ([]Member, error)
}

// Member is a node of the cluster as a control plane records it (a cluster.Member).
type Member struct {
	// Address is the member's ID: the address its node API is reached on.
	Address     string
	Hostname    string
	MachineType string
	// LastSeen is when the member last registered or renewed; zero when it does not say.
	LastSeen time.Time
}

// NodeVersion is a node's answer to Version.
type NodeVersion struct {
	MachineType string
	// Clock is the node's clock when it answered; zero when the node does not report it.
	Clock time.Time
	// Local is the local clock halfway through the call, RoundTrip the call's duration.
	Local     time.Time
	RoundTrip time.Duration
}

// NodeAPIOptions configure NodeAPI.
type NodeAPIOptions struct {
	// Endpoints are the node API endpoints calls go through (the talosconfig's endpoints).
	Endpoints []string
	// Port is the node API port direct probes dial (default client.DefaultPort).
	Port int
	// KubePort is the kube-apiserver port of the control planes (default 6443).
	KubePort int
	// TrustdPort is the trustd port join-token probes dial (default trustd.DefaultPort).
	TrustdPort int
	// Logger receives client warnings; nil discards them.
	Logger *zap.Logger
}

// NodeAPI is the Cluster of real nodes: calls go through the endpoints, addressed to each node
// with `node` metadata, as every nodepkictl command does.
type NodeAPI struct {
	opts NodeAPIOptions

	mu      sync.Mutex
	clients []*client.Client
	names   []string
}

// NewNodeAPI returns a NodeAPI; call UseCredentials before anything else.
func NewNodeAPI(opts NodeAPIOptions) *NodeAPI {
	if opts.Port == 0 {
		opts.Port = client.DefaultPort
	}

	return &NodeAPI{opts: opts}
}

// UseCredentials implements Cluster.
func (a *NodeAPI) UseCredentials(ctx context.Context, creds []Credentials) error {
	if len(creds) == 0 {
		return errors.New("no credentials")
	}

	clients := make([]*client.Client, 0, len(creds))
	names := make([]string, 0, len(creds))

	for _, c := range creds {
		cl, err := client.New(ctx, client.ClientOptions{Context: c.Context(a.opts.Endpoints), Logger: a.opts.Logger})
		if err != nil {
			closeAll(clients)

			return fmt.Errorf("%s credentials: %w", c.Name, err)
		}

		clients = append(clients, cl)
		names = append(names, c.Name)
	}

	a.mu.Lock()
	old := a.clients
	a.clients, a.names = clients, names
	a.mu.Unlock()

	closeAll(old)

	return nil
}

// Close closes the connections.
func (a *NodeAPI) Close() error {
	a.mu.Lock()
	old := a.clients
	a.clients, a.names = nil, nil
	a.mu.Unlock()

	closeAll(old)

	return nil
}

func closeAll(clients []*client.Client) {
	for _, c := range clients {
		c.Close() // nothing to do about a failed close
	}
}

// do runs fn with each client in turn until one is not refused as unauthenticated.
func (a *NodeAPI) do(fn func(c *client.Client) error) error {
	a.mu.Lock()
	clients, names := a.clients, a.names
	a.mu.Unlock()

	if len(clients) == 0 {
		return errors.New("no credentials set")
	}

	var errs []error

	for i, c := range clients {
		err := fn(c)
		if status.Code(err) != codes.Unauthenticated {
			return err
		}

		errs = append(errs, fmt.Errorf("with the %s credentials: %w", names[i], err))
	}

	return errors.Join(errs...)
}

// Version implements Cluster.
func (a *NodeAPI) Version(ctx context.Context, node string) (NodeVersion, error) {
	var v NodeVersion

	err := a.do(func(c *client.Client) error {
		start := time.Now()

		resp, err := c.Node().Version(client.WithNode(ctx, node), &nodeapi.VersionRequest{})
		if err != nil {
			return err
		}

		v.RoundTrip = time.Since(start)
		v.Local = start.Add(v.RoundTrip / 2)
		v.MachineType = resp.GetMachineType()

		if nanos := resp.GetUnixTimeNanos(); nanos != 0 {
			v.Clock = time.Unix(0, nanos)
		}

		return nil
	})

	return v, err
}

// MachineConfig implements Cluster.
func (a *NodeAPI) MachineConfig(ctx context.Context, node string) ([]byte, error) {
	var raw []byte

	err := a.do(func(c *client.Client) error {
		mc, err := safe.StateGetByID[*config.MachineConfig](client.WithNode(ctx, node), c.COSI(), config.ActiveID)
		if err != nil {
			return err
		}

		raw = mc.TypedSpec().Raw

		return nil
	})

	return raw, err
}

// ApplyPatches implements Cluster.
func (a *NodeAPI) ApplyPatches(ctx context.Context, node string, patches [][]byte) error {
	return a.do(func(c *client.Client) error {
		_, err := c.Node().ApplyConfiguration(client.WithNode(ctx, node), &nodeapi.ApplyConfigurationRequest{Patches: patches})

		return err
	})
}

// AcceptedCAs implements Cluster.
func (a *NodeAPI) AcceptedCAs(ctx context.Context, node string) (map[Root]pki.AcceptedCASpec, error) {
	out := map[Root]pki.AcceptedCASpec{}

	err := a.do(func(c *client.Client) error {
		list, err := safe.StateListAll[*pki.AcceptedCA](client.WithNode(ctx, node), c.COSI())
		if err != nil {
			return err
		}

		for res := range list.All() {
			out[Root(res.Metadata().ID())] = res.TypedSpec().DeepCopy()
		}

		return nil
	})

	return out, err
}

// CertificateStatuses implements Cluster.
func (a *NodeAPI) CertificateStatuses(ctx context.Context, node string) (map[string]pki.CertificateStatusSpec, error) {
	out := map[string]pki.CertificateStatusSpec{}

	err := a.do(func(c *client.Client) error {
		list, err := safe.StateListAll[*pki.CertificateStatus](client.WithNode(ctx, node), c.COSI())
		if err != nil {
			return err
		}

		for res := range list.All() {
			out[res.Metadata().ID()] = res.TypedSpec().DeepCopy()
		}

		return nil
	})

	return out, err
}

// Probe implements Cluster.
func (a *NodeAPI) Probe(ctx context.Context, node string, creds Credentials, direct bool) error {
	endpoints := a.opts.Endpoints
	callCtx := client.WithNode(ctx, node)

	if direct {
		endpoints = []string{net.JoinHostPort(node, strconv.Itoa(a.opts.Port))}
		callCtx = ctx
	}

	c, err := client.New(ctx, client.ClientOptions{Context: creds.Context(endpoints), Logger: a.opts.Logger})
	if err != nil {
		return fmt.Errorf("%s credentials: %w", creds.Name, err)
	}

	defer c.Close()

	_, err = c.Node().Version(callCtx, &nodeapi.VersionRequest{})

	return err
}

// Members implements Cluster: the call goes through the endpoints, addressed with `node`
// metadata to the endpoint's host, so that each endpoint's control plane answers for itself.
func (a *NodeAPI) Members(ctx context.Context, endpoint string) ([]Member, error) {
	parsed, err := client.ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}

	var out []Member

	err = a.do(func(c *client.Client) error {
		callCtx := client.WithNode(ctx, parsed.Host)

		list, err := safe.StateListAll[*cluster.Member](callCtx, c.COSI())
		if err != nil {
			if known, rdErr := knowsMembers(callCtx, c); rdErr == nil && !known {
				return nil
			}

			return err
		}

		out = make([]Member, 0, list.Len())

		for res := range list.All() {
			spec := res.TypedSpec()
			m := Member{Address: res.Metadata().ID(), Hostname: spec.Hostname, MachineType: spec.MachineType}

			if seen, err := time.Parse(time.RFC3339, spec.LastSeen); err == nil {
				m.LastSeen = seen
			}

			out = append(out, m)
		}

		out = append(out, etcdMembers(callCtx, c, out)...)

		return nil
	})

	return out, err
}

// knowsMembers reports whether the node registers the Members type; a node of a version before
// it refuses to list them, which is not an error for discovery.
func knowsMembers(ctx context.Context, c *client.Client) (bool, error) {
	_, err := safe.StateGet[*meta.ResourceDefinition](ctx, c.COSI(),
		resource.NewMetadata(meta.NamespaceName, meta.ResourceDefinitionType, strings.ToLower(cluster.MemberType), resource.VersionUndefined))

	switch {
	case err == nil:
		return true, nil
	case state.IsNotFoundError(err):
		return false, nil
	default:
		return false, err
	}
}
