// Package runtime owns assembling the nodepki subsystem: it builds the state (in memory, with the
// machine config and the cluster members persisted in a bolt database under the node's state
// directory), registers the resource types and every controller of the resource graph, control
// plane and worker alike, runs them, and serves trustd on control planes.
//
// A node OS embeds the subsystem by calling New, RegisterController for its own controllers,
// and Run; it feeds the machine config with SetMachineConfig.
package runtime

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	cosiruntime "github.com/cosi-project/runtime/pkg/controller/runtime"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/cosi-project/runtime/pkg/state/impl/inmem"
	"github.com/cosi-project/runtime/pkg/state/impl/namespaced"
	"github.com/cosi-project/runtime/pkg/state/impl/store"
	"github.com/cosi-project/runtime/pkg/state/impl/store/bolt"
	"go.etcd.io/bbolt"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	ctrlcluster "github.com/nodepki/nodepki/controllers/cluster"
	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/controllers/credential"
	ctrletcd "github.com/nodepki/nodepki/controllers/etcd"
	ctrlkubernetes "github.com/nodepki/nodepki/controllers/kubernetes"
	"github.com/nodepki/nodepki/controllers/network"
	"github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/resources"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/config"
	"github.com/nodepki/nodepki/runtime/api"
	"github.com/nodepki/nodepki/runtime/trustd"
)

// StateFile is the name of the bolt database in the state directory.
const StateFile = "state.db"

// History sizing of every (namespace, type) collection of the in-memory state.
//
// The largest burst a single pass writes to one type is one NodeCertificates or
// CertificateStatuses pass (about ten resources), and boot registers a few dozen resource
// definitions in meta. The slowest watchers are API clients (`get --watch` over gRPC), which may
// fall behind by many passes during a rotation; 1024 events is two orders of magnitude above a
// pass, and a watcher that falls further behind gets an error and re-subscribes, while a runtime
// watch that overruns stops every controller. Memory grows on demand from historyInitial. The gap
// (about 6%) keeps readers clear of the slot being overwritten, as the inmem package recommends.
const (
	historyInitial = 8
	historyMax     = 1024
	historyGap     = 64
)

// boltOpenTimeout bounds the wait for the database file lock, so a second process on the same
// state directory fails with an error instead of hanging.
const boltOpenTimeout = 5 * time.Second

// Options configures a Runtime.
type Options struct {
	// StateDir holds the persisted state (created 0700; the database is 0600). "" keeps everything in memory.
	StateDir string
	// Logger receives the runtime's and the controllers' logs; nil discards them.
	Logger *zap.Logger
	// Addresses are the node's configured addresses.
	Addresses []netip.Addr
	// HostAddresses adds the host's interface addresses to Addresses.
	HostAddresses bool
	// Hostname is the node's hostname; "" uses os.Hostname.
	Hostname string
	// Clock overrides time.Now for certificate issuance and status.
	Clock func() time.Time
	// Trustd configures trustd: served on control planes, asked for certificates by workers.
	Trustd TrustdOptions
	// EtcdBinary, on a control plane, runs an etcd member on the first of Addresses (needs StateDir);
	// "" only writes the etcd PKI files.
	EtcdBinary string
	// KubeAPIServerBinary, on a control plane, runs kube-apiserver on the first of Addresses against
	// the node's etcd member (needs EtcdBinary); "" only writes kube-apiserver's files.
	KubeAPIServerBinary string
}

// TrustdOptions configure trustd, the certificate-signing service of control planes.
type TrustdOptions struct {
	// Listen is where a control plane serves trustd (port pkg/trustd.DefaultPort by convention);
	// the zero value serves none. Whether the node is a control plane comes from its machine config.
	Listen netip.AddrPort
	// Endpoints are extra endpoints (host or host:port) a worker sends its CSR to, before the host
	// of cluster.controlPlane.endpoint.
	Endpoints []string
	// SourceAddress, if set, is the address a worker's requests are made from (its node address),
	// so that trustd tells the nodes of one host apart.
	SourceAddress netip.Addr
	// RetryUnit and RetryWindow tune a worker's retries (controllers/pki.TrustdOptions).
	RetryUnit, RetryWindow time.Duration
	// ControlPlanes are the addresses and host names of the other control planes, which trustd
	// never signs for a worker (trustd.Options.ControlPlanes).
	ControlPlanes []string
	// Interceptor, if set, wraps every trustd request first (trustd.Options.Interceptor: metrics).
	Interceptor grpc.UnaryServerInterceptor
	// Audit, if set, receives trustd's signings and refusals (trustd.Options.Audit).
	Audit *audit.Log
}

// Runtime is the nodepki subsystem of one node.
type Runtime struct {
	state   state.State
	runtime *cosiruntime.Runtime
	store   *bolt.BackingStore
	logger  *zap.Logger
	trustd  TrustdOptions

	// trustdBound is set by ListenTrustd: the machine type is decided and the listener (nil on a
	// worker) is bound; Run serves it instead of waiting for the machine config.
	trustdBound    bool
	trustdListener net.Listener
}

// New builds the state and the controller runtime with every nodepki controller registered.
// Close releases the state directory.
func New(opts Options) (*Runtime, error) {
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}

	hostname := opts.Hostname
	if hostname == "" {
		var err error

		if hostname, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("error reading the hostname (set Options.Hostname): %w", err)
		}
	}

	rt := &Runtime{logger: logger, trustd: opts.Trustd}

	if opts.StateDir != "" {
		var err error

		if rt.store, err = openStore(opts.StateDir); err != nil {
			return nil, err
		}
	}

	rt.state = state.WrapCore(namespaced.NewState(func(ns resource.Namespace) state.CoreState {
		stateOptions := []inmem.StateOption{
			inmem.WithHistoryInitialCapacity(historyInitial),
			inmem.WithHistoryMaxCapacity(historyMax),
			inmem.WithHistoryGap(historyGap),
		}

		// The machine config and the cluster members survive a restart.
		if (ns == config.NamespaceName || ns == cluster.NamespaceName) && rt.store != nil {
			stateOptions = append(stateOptions, inmem.WithBackingStore(rt.store.WithNamespace(ns)))
		}

		return inmem.NewStateWithOptions(stateOptions...)(ns)
	}))

	if err := rt.setup(logger, hostname, opts); err != nil {
		return nil, errors.Join(err, rt.Close())
	}

	return rt, nil
}

func (rt *Runtime) setup(logger *zap.Logger, hostname string, opts Options) error {
	if err := resources.Register(context.Background(), rt.state); err != nil {
		return fmt.Errorf("error registering resources: %w", err)
	}

	var err error

	if rt.runtime, err = cosiruntime.NewRuntime(rt.state, logger); err != nil {
		return fmt.Errorf("error creating controller runtime: %w", err)
	}

	for _, ctrl := range []controller.Controller{
		configview.NewMachineConfigViewController(),
		&network.NodeAddressesController{Addresses: opts.Addresses, HostAddresses: opts.HostAddresses},
		&ctrlcluster.SelfMemberController{Hostname: hostname, Clock: opts.Clock},
		pki.NewRootSecretsController(),
		pki.NewAcceptedCAsController(),
		pki.NewCertSANsController(hostname),
		pki.NewCertificateRequestsController(pki.CertificateRequestsOptions{Hostname: hostname, TrustdEndpoints: opts.Trustd.Endpoints}),
		pki.NewCAStatusesController(),
		pki.NewSecurityStatusController(api.TLSVersions()),
		&credential.RevocationsController{},
	} {
		if err = rt.RegisterController(ctrl); err != nil {
			return err
		}
	}

	for _, ctrl := range []controller.QController{
		pki.NewNodeCertificatesController(pki.NodeCertificatesOptions{
			Clock: opts.Clock,
			Trustd: pki.TrustdOptions{
				SourceAddress: opts.Trustd.SourceAddress,
				RetryUnit:     opts.Trustd.RetryUnit,
				RetryWindow:   opts.Trustd.RetryWindow,
			},
		}),
		pki.NewCertificateStatusesController(opts.Clock),
	} {
		if err = rt.RegisterQController(ctrl); err != nil {
			return err
		}
	}

	if opts.StateDir != "" {
		// kube-apiserver's command line names these files: absolute, they are the same whatever
		// the working directory of the nodepkid that adopts it.
		kubeDir, absErr := filepath.Abs(KubernetesPKIDir(opts.StateDir))
		if absErr != nil {
			return fmt.Errorf("error resolving the state directory: %w", absErr)
		}

		if err = rt.RegisterController(ctrlkubernetes.NewAPIServerFilesController(kubeDir)); err != nil {
			return err
		}

		// The component kubeconfigs point at the node's own kube-apiserver, on its first address.
		if len(opts.Addresses) > 0 {
			if err = rt.RegisterController(&ctrlkubernetes.KubeconfigFilesController{
				Dir: kubeDir, Address: opts.Addresses[0], Clock: opts.Clock,
			}); err != nil {
				return err
			}
		}

		if err = rt.RegisterController(ctrletcd.NewPKIFilesController(EtcdPKIDir(opts.StateDir))); err != nil {
			return err
		}
	}

	if opts.EtcdBinary != "" {
		if opts.StateDir == "" || len(opts.Addresses) == 0 {
			return errors.New("running etcd needs Options.StateDir and Options.Addresses")
		}

		// etcd's command line names its data directory, which is how a restarted nodepkid finds
		// its etcd again whatever its working directory.
		stateDir, absErr := filepath.Abs(opts.StateDir)
		if absErr != nil {
			return fmt.Errorf("error resolving the state directory: %w", absErr)
		}

		if err = rt.RegisterController(&ctrletcd.MemberStatusController{
			Binary: opts.EtcdBinary, StateDir: stateDir, Address: opts.Addresses[0],
		}); err != nil {
			return err
		}

		if opts.KubeAPIServerBinary != "" {
			if err = rt.RegisterController(&ctrlkubernetes.APIServerStatusController{
				Binary: opts.KubeAPIServerBinary, StateDir: stateDir, Address: opts.Addresses[0],
			}); err != nil {
				return err
			}
		}
	} else if opts.KubeAPIServerBinary != "" {
		return errors.New("running kube-apiserver needs Options.EtcdBinary: it uses the node's own etcd member")
	}

	return nil
}

// EtcdPKIDir is where a control plane writes the etcd PKI files: <state-dir>/secrets/etcd.
func EtcdPKIDir(stateDir string) string {
	return filepath.Join(stateDir, "secrets", "etcd")
}

// KubernetesPKIDir is where a control plane writes kube-apiserver's files: <state-dir>/secrets/kubernetes.
func KubernetesPKIDir(stateDir string) string {
	return filepath.Join(stateDir, "secrets", "kubernetes")
}

// openStore opens (or creates) the bolt database in dir, tightening permissions that are too open.
func openStore(dir string) (*bolt.BackingStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("error creating state directory: %w", err)
	}

	// MkdirAll leaves an existing directory as it is; the state holds CA keys.
	if err := os.Chmod(dir, 0o700); err != nil { //nolint:gosec // a directory: 0700 is owner-only, and it must be searchable
		return nil, fmt.Errorf("error setting state directory permissions: %w", err)
	}

	path := filepath.Join(dir, StateFile)

	backingStore, err := bolt.NewBackingStore(func() (*bbolt.DB, error) {
		return bbolt.Open(path, 0o600, &bbolt.Options{Timeout: boltOpenTimeout})
	}, store.ProtobufMarshaler{})
	if err != nil {
		return nil, fmt.Errorf("error opening state database %s (is another process using the state directory?): %w", path, err)
	}

	if err = os.Chmod(path, 0o600); err != nil {
		return nil, errors.Join(fmt.Errorf("error setting state database permissions: %w", err), backingStore.Close())
	}

	return backingStore, nil
}

// State is the state the controllers run on: read resources, watch them, or serve them over the API.
func (rt *Runtime) State() state.State {
	return rt.state
}

// RegisterController adds a controller, before or while Run runs.
func (rt *Runtime) RegisterController(ctrl controller.Controller) error {
	if err := rt.runtime.RegisterController(ctrl); err != nil {
		return fmt.Errorf("error registering controller %s: %w", ctrl.Name(), err)
	}

	return nil
}

// RegisterQController adds a queue-based controller, before or while Run runs.
func (rt *Runtime) RegisterQController(ctrl controller.QController) error {
	if err := rt.runtime.RegisterQController(ctrl); err != nil {
		return fmt.Errorf("error registering controller %s: %w", ctrl.Name(), err)
	}

	return nil
}

// DependencyGraph describes every registered controller with its inputs and outputs.
func (rt *Runtime) DependencyGraph() (*controller.DependencyGraph, error) {
	return rt.runtime.GetDependencyGraph()
}

// Run runs the controllers until ctx is done, and trustd too on a control plane when
// Options.Trustd.Listen is set. An error means the runtime stopped (for example a watch overran
// its history, or trustd could not listen) and the subsystem must be restarted.
func (rt *Runtime) Run(ctx context.Context) error {
	group, ctx := errgroup.WithContext(ctx)

	group.Go(func() error {
		if err := rt.runtime.Run(ctx); err != nil {
			return fmt.Errorf("controller runtime stopped: %w", err)
		}

		return nil
	})

	if rt.trustd.Listen.IsValid() {
		group.Go(func() error { return rt.serveTrustd(ctx) })
	}

	return group.Wait()
}

// ListenTrustd binds trustd's listener (Options.Trustd.Listen) now if the node is a control plane,
// for a caller that knows the machine type before Run and wants a port in use to fail early; Run
// then serves it. Without it, Run binds the listener once the machine config says the node is a
// control plane.
func (rt *Runtime) ListenTrustd(controlPlane bool) error {
	rt.trustdBound = true

	if !controlPlane || !rt.trustd.Listen.IsValid() {
		return nil
	}

	listener, err := net.Listen("tcp", rt.trustd.Listen.String())
	if err != nil {
		return fmt.Errorf("error listening for trustd: %w", err)
	}

	rt.trustdListener = listener

	return nil
}

// serveTrustd serves trustd until ctx is done if the machine config, once there is one, makes the
// node a control plane. The machine type cannot change on a running node, so it is read once.
func (rt *Runtime) serveTrustd(ctx context.Context) error {
	if !rt.trustdBound {
		controlPlane, err := rt.waitMachineType(ctx)
		if err != nil {
			return err
		}

		if err = rt.ListenTrustd(controlPlane); err != nil {
			return err
		}
	}

	listener := rt.trustdListener
	if listener == nil {
		return nil
	}

	server, err := trustd.New(trustd.Options{
		State:         rt.state,
		Logger:        rt.logger.With(zap.String("component", "trustd")),
		ControlPlanes: rt.trustd.ControlPlanes,
		Interceptor:   rt.trustd.Interceptor,
		Audit:         rt.trustd.Audit,
	})
	if err != nil {
		return errors.Join(err, listener.Close())
	}

	return server.Serve(ctx, listener)
}

// waitMachineType waits for the machine config and tells whether it makes the node a control
// plane; false (and no error) when ctx ends first.
func (rt *Runtime) waitMachineType(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	events := make(chan safe.WrappedStateEvent[*config.MachineConfig])

	if err := safe.StateWatch(ctx, rt.state, config.NewMachineConfig(config.ActiveID).Metadata(), events); err != nil {
		return false, fmt.Errorf("error watching the machine config: %w", err)
	}

	for {
		select {
		case <-ctx.Done():
			return false, nil
		case event := <-events:
			switch event.Type() {
			case state.Created, state.Updated:
				mc, err := event.Resource()
				if err != nil {
					return false, fmt.Errorf("error reading the machine config: %w", err)
				}

				doc, err := configview.Decode(mc.TypedSpec().Raw)
				if err != nil {
					return false, fmt.Errorf("error decoding the machine config: %w", err)
				}

				return doc.Machine.IsControlPlane(), nil
			case state.Errored:
				return false, fmt.Errorf("error watching the machine config: %w", event.Error())
			case state.Destroyed, state.Bootstrapped, state.Noop:
			}
		}
	}
}

// Close closes the state database and a trustd listener Run did not serve; call it after Run returned.
func (rt *Runtime) Close() error {
	if rt.trustdListener != nil {
		if err := rt.trustdListener.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("error closing the trustd listener: %w", err)
		}
	}

	if rt.store == nil {
		return nil
	}

	if err := rt.store.Close(); err != nil {
		return fmt.Errorf("error closing state database: %w", err)
	}

	return nil
}

// SetMachineConfig creates or replaces the machine config the node runs with (owner "": user input).
// The caller validates raw first; an identical config writes nothing.
func (rt *Runtime) SetMachineConfig(ctx context.Context, raw []byte) error {
	if err := safe.StateModify(ctx, rt.state, config.NewMachineConfig(config.ActiveID), func(mc *config.MachineConfig) error {
		mc.TypedSpec().Raw = bytes.Clone(raw)

		return nil
	}); err != nil {
		return fmt.Errorf("error writing machine config: %w", err)
	}

	return nil
}

// MachineConfig returns the machine config the node runs with; the error satisfies
// state.IsNotFoundError when there is none.
func (rt *Runtime) MachineConfig(ctx context.Context) ([]byte, error) {
	mc, err := safe.StateGetByID[*config.MachineConfig](ctx, rt.state, config.ActiveID)
	if err != nil {
		return nil, fmt.Errorf("error reading machine config: %w", err)
	}

	return mc.TypedSpec().Raw, nil
}
