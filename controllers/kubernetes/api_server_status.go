package kubernetes

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/controllers/supervised"
	etcdpkg "github.com/nodepki/nodepki/pkg/etcd"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/pkg/process"
	"github.com/nodepki/nodepki/resources/etcd"
	"github.com/nodepki/nodepki/resources/kubernetes"
)

// Defaults of APIServerStatusController.
const (
	DefaultProbeInterval = time.Second
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = 30 * time.Second
	// DefaultComeBackTimeout bounds the wait for a restarted kube-apiserver to be ready.
	DefaultComeBackTimeout = 2 * time.Minute

	// lockWait bounds one attempt to take the restart lock; the next probe tries again.
	lockWait = 5 * time.Second
	// stopGrace is how long kube-apiserver gets to stop on SIGTERM before SIGKILL.
	stopGrace = 10 * time.Second
	// probeTimeout bounds one /readyz call.
	probeTimeout = 2 * time.Second
	// readyResetsBackoff: a kube-apiserver ready that long after a start has its backoff reset.
	readyResetsBackoff = 30 * time.Second
)

// APIServerStatusController runs the kube-apiserver of a control plane and reports it as
// APIServerStatus/kube-apiserver. Like etcd's MemberStatusController it runs on supervised.Loop:
// its subject is a process, so it wakes on process exits and on a probe timer as well as on
// resource events.
//
// kube-apiserver listens on <Address>:6443 and uses the node's own etcd member, so it starts once
// the files of APIServerFilesController are written and the local member is healthy. It runs in
// its own process group with a pidfile and is adopted by the next nodepkid after a crash; a process
// that exits is started again with exponential backoff; nodepkid stopping stops it.
//
// kube-apiserver reloads its client CA bundle, serving pair, requestheader CA bundle, front-proxy
// client pair and etcd client pair by itself, but reads the service-account keys and the etcd CA
// bundle only at start (pkg/kubernetes StartupFiles). When their digest differs from the one the
// process loaded, kube-apiserver is restarted under the cluster-wide restart lock of etcd (the one
// etcd members restart under), only while every other control plane's kube-apiserver is ready, and
// the lock is released once it is ready again: two kube-apiservers, or a kube-apiserver and an etcd
// member, are never restarted at once.
type APIServerStatusController struct {
	// Binary is the kube-apiserver executable.
	Binary string
	// StateDir holds the pidfile (kube-apiserver.pid) and the log (kube-apiserver.log).
	StateDir string
	// Address is the node address kube-apiserver listens on and advertises.
	Address netip.Addr
	// ProbeInterval, MinBackoff, MaxBackoff and ComeBackTimeout override the defaults.
	ProbeInterval, MinBackoff, MaxBackoff, ComeBackTimeout time.Duration

	// sup is the running process and its restarts; it outlives a restart of Run.
	sup     process.Supervision
	adopted bool
}

// Name implements controller.Controller interface.
func (ctrl *APIServerStatusController) Name() string {
	return "kubernetes.APIServerStatusController"
}

// Inputs implements controller.Controller interface.
func (ctrl *APIServerStatusController) Inputs() []controller.Input {
	return []controller.Input{
		configview.Input(),
		safe.Input[*kubernetes.APIServerFiles](controller.InputWeak),
		safe.Input[*etcd.MemberStatus](controller.InputWeak),
		safe.Input[*etcd.PKIFiles](controller.InputWeak),
	}
}

// Outputs implements controller.Controller interface.
func (ctrl *APIServerStatusController) Outputs() []controller.Output {
	return []controller.Output{{Type: kubernetes.APIServerStatusType, Kind: controller.OutputExclusive}}
}

func (ctrl *APIServerStatusController) logFile() string {
	return filepath.Join(ctrl.StateDir, "kube-apiserver.log")
}

func (ctrl *APIServerStatusController) pidFile() string {
	return filepath.Join(ctrl.StateDir, "kube-apiserver.pid")
}

func (ctrl *APIServerStatusController) url() string {
	return kubepki.APIServerConfig{Address: ctrl.Address}.URL()
}

// Run implements controller.Controller interface.
func (ctrl *APIServerStatusController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	ctrl.sup.Name, ctrl.sup.Address, ctrl.sup.LogFile = "kube-apiserver", ctrl.Address, ctrl.logFile()
	ctrl.sup.MinBackoff, ctrl.sup.MaxBackoff = cmp.Or(ctrl.MinBackoff, DefaultMinBackoff), cmp.Or(ctrl.MaxBackoff, DefaultMaxBackoff)

	return supervised.Loop[kubernetes.APIServerStatusSpec, kubernetes.APIServerStatusExtension]{
		Sup:           &ctrl.sup,
		ProbeInterval: cmp.Or(ctrl.ProbeInterval, DefaultProbeInterval),
		StopGrace:     stopGrace,
		StatusID:      kubernetes.APIServerStatusID,
		Reconcile:     ctrl.reconcile,
	}.Run(ctx, r, logger)
}

func (ctrl *APIServerStatusController) writeStatus(ctx context.Context, r controller.Runtime, status kubernetes.APIServerStatusSpec) error {
	if err := safe.WriterModify(ctx, r, kubernetes.NewAPIServerStatus(kubernetes.APIServerStatusID), func(res *kubernetes.APIServerStatus) error {
		*res.TypedSpec() = status

		return nil
	}); err != nil {
		return fmt.Errorf("error writing the kube-apiserver status: %w", err)
	}

	return nil
}

// adopt takes over a kube-apiserver a previous nodepkid left running, once: its command line names
// the files directory, known from APIServerFiles.
func (ctrl *APIServerStatusController) adopt(logger *zap.Logger, cfg kubepki.APIServerConfig) {
	if ctrl.adopted {
		return
	}

	ctrl.adopted = true

	proc, err := kubepki.AdoptAPIServer(cfg.PKIDir, ctrl.pidFile())
	if err != nil {
		logger.Warn("error adopting a running kube-apiserver", zap.Error(err))
	}

	if proc != nil {
		ctrl.sup.Proc = proc
		ctrl.sup.StartedAt = time.Now()

		logger.Info("adopted running kube-apiserver", zap.Int("pid", proc.PID))
	}
}

// reconcile starts, probes or restarts kube-apiserver and returns its status.
func (ctrl *APIServerStatusController) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger) kubernetes.APIServerStatusSpec {
	status := kubernetes.APIServerStatusSpec{URL: ctrl.url(), State: kubernetes.StateWaiting}

	files, err := safe.ReaderGetByID[*kubernetes.APIServerFiles](ctx, r, kubernetes.APIServerFilesID)
	if err != nil {
		status.LastError = "waiting for the kube-apiserver files"
		if !state.IsNotFoundError(err) {
			status.LastError = fmt.Sprintf("error reading the kube-apiserver files: %v", err)
		}

		return ctrl.withProcess(status)
	}

	cfg, err := ctrl.config(ctx, r, files.TypedSpec())
	if err != nil {
		status.State = kubernetes.StateFailed
		status.LastError = err.Error()

		return ctrl.withProcess(status)
	}

	ctrl.adopt(logger, cfg)

	if ctrl.sup.Proc == nil {
		ctrl.start(ctx, r, logger, cfg, files.TypedSpec(), &status)

		return ctrl.withProcess(status)
	}

	ctrl.probe(ctx, files.TypedSpec(), &status)

	if files.TypedSpec().StartupDigest != ctrl.sup.Proc.Tag {
		ctrl.rollingRestart(ctx, r, logger, cfg, files.TypedSpec(), &status)
	}

	return ctrl.withProcess(status)
}

// config is kube-apiserver's configuration from the machine config: the service network, and
// the service-account issuer, which is cluster.controlPlane.endpoint as in Talos.
func (ctrl *APIServerStatusController) config(ctx context.Context, r controller.Reader, files *kubernetes.APIServerFilesSpec) (kubepki.APIServerConfig, error) {
	cfg := kubepki.APIServerConfig{
		Address:     ctrl.Address,
		PKIDir:      files.Dir,
		EtcdServers: []string{etcdpkg.ClientURL(ctrl.Address)},
	}

	doc, err := configview.Read(ctx, r)
	if err != nil {
		return cfg, err
	}

	if doc.Cluster != nil && doc.Cluster.ControlPlane != nil {
		cfg.ServiceAccountIssuer = doc.Cluster.ControlPlane.Endpoint
	}

	if doc.Cluster != nil && doc.Cluster.Network != nil {
		cfg.ServiceSubnets = doc.Cluster.Network.ServiceSubnets
	}

	// Checked here so that a bad config is reported before any start.
	if _, err = cfg.Args(); err != nil {
		return cfg, fmt.Errorf("kube-apiserver on %s not started: %w", ctrl.Address, err)
	}

	return cfg, nil
}

func (ctrl *APIServerStatusController) withProcess(status kubernetes.APIServerStatusSpec) kubernetes.APIServerStatusSpec {
	status.Restarts = ctrl.sup.Restarts

	if ctrl.sup.Proc != nil {
		status.Running = true
		status.PID = ctrl.sup.Proc.PID
		status.StartupDigest = ctrl.sup.Proc.Tag
	}

	if status.LastError == "" && !status.Ready {
		status.LastError = ctrl.sup.LastErr
	}

	return status
}

// probe asks kube-apiserver for /readyz.
func (ctrl *APIServerStatusController) probe(ctx context.Context, files *kubernetes.APIServerFilesSpec, status *kubernetes.APIServerStatusSpec) {
	err := kubepki.Ready(ctx, ctrl.url(), filepath.Join(files.Dir, kubepki.ClientCAFile), probeTimeout)
	if err != nil {
		status.State = kubernetes.StateStarting
		// No elapsed time in the message: the status changes when the state does, not every probe.
		status.LastError = fmt.Sprintf("kube-apiserver on %s not ready (started %s): %v", ctrl.Address,
			ctrl.sup.StartedAt.UTC().Format(time.RFC3339), err)

		return
	}

	status.State = kubernetes.StateRunning
	status.Ready = true
	ctrl.sup.LastErr = ""

	ctrl.sup.ResetBackoffAfter(readyResetsBackoff)
}

// start starts kube-apiserver once the node's etcd member is healthy.
func (ctrl *APIServerStatusController) start(
	ctx context.Context, r controller.Reader, logger *zap.Logger, cfg kubepki.APIServerConfig, files *kubernetes.APIServerFilesSpec,
	status *kubernetes.APIServerStatusSpec,
) {
	member, err := safe.ReaderGetByID[*etcd.MemberStatus](ctx, r, etcd.LocalMemberID)
	if err != nil || !member.TypedSpec().Healthy {
		status.LastError = fmt.Sprintf("kube-apiserver on %s waits for the node's etcd member to be healthy", ctrl.Address)
		if err == nil && member.TypedSpec().LastError != "" {
			status.LastError += ": " + member.TypedSpec().LastError
		}

		return
	}

	if time.Now().Before(ctrl.sup.RetryAt) {
		status.State = kubernetes.StateFailed
		status.LastError = ctrl.sup.LastErr

		return
	}

	if err = ctrl.launch(logger, cfg, files); err != nil {
		ctrl.fail(logger, status, err)

		return
	}

	status.State = kubernetes.StateStarting
	status.LastError = ""
}

// launch starts the process with the files' startup digest as its tag.
func (ctrl *APIServerStatusController) launch(logger *zap.Logger, cfg kubepki.APIServerConfig, files *kubernetes.APIServerFilesSpec) error {
	if _, err := os.Stat(ctrl.Binary); err != nil {
		return fmt.Errorf("kube-apiserver on %s: binary %s: %w (fix --kube-apiserver-binary)", ctrl.Address, ctrl.Binary, err)
	}

	pc, err := cfg.Process(ctrl.Binary, ctrl.logFile(), ctrl.pidFile())
	if err != nil {
		return err
	}

	proc, err := process.Start(pc, files.StartupDigest)
	if err != nil {
		return fmt.Errorf("kube-apiserver on %s: %w", ctrl.Address, err)
	}

	ctrl.sup.Started(proc)

	logger.Info("started kube-apiserver", zap.Int("pid", proc.PID), zap.String("url", ctrl.url()),
		zap.String("startup_digest", files.StartupDigest), zap.String("log", ctrl.logFile()))

	return nil
}

func (ctrl *APIServerStatusController) fail(logger *zap.Logger, status *kubernetes.APIServerStatusSpec, err error) {
	status.State = kubernetes.StateFailed
	status.LastError = err.Error()
	ctrl.sup.Failed(logger, err)
}

// rollingRestart restarts kube-apiserver to load changed startup files, under the cluster-wide
// restart lock and only while every other control plane's kube-apiserver is ready; it releases
// the lock once kube-apiserver is ready again. This one may be unready already (it may need the
// restart to reach etcd again): restarting it adds no second unavailable kube-apiserver.
// Whatever stops it early is retried at the next probe.
func (ctrl *APIServerStatusController) rollingRestart(
	ctx context.Context, r controller.Runtime, logger *zap.Logger, cfg kubepki.APIServerConfig, files *kubernetes.APIServerFilesSpec,
	status *kubernetes.APIServerStatusSpec,
) {
	pending := func(format string, args ...any) {
		status.LastError = "files kube-apiserver reads only at start changed, restart pending: " + fmt.Sprintf(format, args...)
	}

	client, err := ctrl.etcdClient(ctx, r)
	if err != nil {
		pending("%v", err)

		return
	}

	defer client.Close()

	others, err := ctrl.otherAPIServers(ctx, client)
	if err != nil {
		pending("%v", err)

		return
	}

	lock, err := etcdpkg.LockRestart(ctx, client, lockWait)
	if err != nil {
		pending("%v", err)

		return
	}

	defer func() {
		if unlockErr := lock.Unlock(ctx, lockWait); unlockErr != nil {
			logger.Warn("error releasing the restart lock (it expires with its session)", zap.Error(unlockErr))
		}
	}()

	// Checked under the lock: a kube-apiserver that restarted or came back unready is seen here.
	if notReady := notReadyAPIServers(ctx, others, filepath.Join(files.Dir, kubepki.ClientCAFile)); len(notReady) > 0 {
		pending("other kube-apiservers not ready: %v", notReady)

		return
	}

	logger.Info("restarting kube-apiserver to load changed startup files",
		zap.String("from", ctrl.sup.Proc.Tag), zap.String("to", files.StartupDigest))

	// The restart is visible while it lasts.
	restarting := ctrl.withProcess(*status)
	restarting.State = kubernetes.StateRestarting
	restarting.Ready = false
	restarting.LastError = ""

	if err = ctrl.writeStatus(ctx, r, restarting); err != nil {
		status.LastError = err.Error()

		return
	}

	stopping := time.Now()

	if err = ctrl.sup.Proc.Stop(ctx, stopGrace); err != nil {
		status.LastError = err.Error()

		return
	}

	ctrl.sup.Proc = nil

	if err = ctrl.launch(logger, cfg, files); err != nil {
		ctrl.fail(logger, status, err)

		return
	}

	if err = ctrl.waitReady(ctx, files); err != nil {
		ctrl.sup.LastErr = fmt.Sprintf("kube-apiserver on %s did not come back after a restart for changed startup files: %v", ctrl.Address, err)
		status.State = kubernetes.StateFailed
		status.Ready = false
		status.LastError = ctrl.sup.LastErr

		logger.Error("kube-apiserver did not come back after a restart", zap.Error(err))

		return
	}

	status.State = kubernetes.StateRunning
	status.Ready = true
	status.LastError = ""

	logger.Info("kube-apiserver restarted with the changed startup files", zap.Int("pid", ctrl.sup.Proc.PID), zap.Duration("unready", time.Since(stopping)))
}

// etcdClient is a client of the etcd members with the node's etcd admin credentials.
func (ctrl *APIServerStatusController) etcdClient(ctx context.Context, r controller.Reader) (*clientv3.Client, error) {
	files, err := safe.ReaderGetByID[*etcd.PKIFiles](ctx, r, etcd.PKIFilesID)
	if err != nil {
		return nil, fmt.Errorf("error reading the etcd PKI files: %w", err)
	}

	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(files.TypedSpec().Dir, name)) }

	var pems [3][]byte

	for i, name := range []string{etcdpkg.CAFile, etcdpkg.AdminCertFile, etcdpkg.AdminKeyFile} {
		if pems[i], err = read(name); err != nil {
			return nil, fmt.Errorf("error reading the etcd PKI files: %w", err)
		}
	}

	tlsConfig, err := etcdpkg.TLSConfig(pems[0], pems[1], pems[2])
	if err != nil {
		return nil, err
	}

	return etcdpkg.NewClient([]string{etcdpkg.ClientURL(ctrl.Address)}, tlsConfig)
}

// otherAPIServers are the URLs of the other control planes' kube-apiservers: one on the host of
// every other etcd member.
func (ctrl *APIServerStatusController) otherAPIServers(ctx context.Context, client *clientv3.Client) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()

	list, err := client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("error listing etcd members: %w", err)
	}

	var urls []string

	for _, m := range list.Members {
		if len(m.ClientURLs) == 0 {
			return nil, fmt.Errorf("etcd member %s has not started", etcdpkg.FormatID(m.ID))
		}

		u, err := url.Parse(m.ClientURLs[0])
		if err != nil {
			return nil, fmt.Errorf("etcd member %s: client URL %q: %w", etcdpkg.FormatID(m.ID), m.ClientURLs[0], err)
		}

		if addr, parseErr := netip.ParseAddr(u.Hostname()); parseErr == nil && addr == ctrl.Address {
			continue
		}

		urls = append(urls, "https://"+net.JoinHostPort(u.Hostname(), strconv.Itoa(kubepki.APIServerPort)))
	}

	return urls, nil
}

func notReadyAPIServers(ctx context.Context, urls []string, caFile string) []string {
	var notReady []string

	for _, u := range urls {
		if err := kubepki.Ready(ctx, u, caFile, probeTimeout); err != nil {
			notReady = append(notReady, fmt.Sprintf("%s (%v)", u, err))
		}
	}

	return notReady
}

// waitReady waits until the restarted kube-apiserver answers /readyz ok.
func (ctrl *APIServerStatusController) waitReady(ctx context.Context, files *kubernetes.APIServerFilesSpec) error {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(ctrl.ComeBackTimeout, DefaultComeBackTimeout))
	defer cancel()

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()

	var lastErr error

	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready in time: %w (last: %w)", ctx.Err(), lastErr)
		case <-ctrl.sup.Proc.Exited():
			return fmt.Errorf("kube-apiserver exited: %w: %s", ctrl.sup.Proc.Err(), process.LastLogLine(ctrl.logFile()))
		case <-tick.C:
		}

		if lastErr = kubepki.Ready(ctx, ctrl.url(), filepath.Join(files.Dir, kubepki.ClientCAFile), probeTimeout); lastErr == nil {
			return nil
		}
	}
}
