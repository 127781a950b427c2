package etcd

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/controllers/supervised"
	etcdpkg "github.com/nodepki/nodepki/pkg/etcd"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/process"
	"github.com/nodepki/nodepki/resources/cluster"
	"github.com/nodepki/nodepki/resources/etcd"
)

// Defaults of MemberStatusController.
const (
	DefaultProbeInterval = time.Second
	DefaultMinBackoff    = time.Second
	DefaultMaxBackoff    = 30 * time.Second
	// DefaultComeBackTimeout bounds the wait for a restarted member to be healthy and caught up.
	DefaultComeBackTimeout = time.Minute
	// RestartLockKey is the etcd key prefix of the cluster-wide restart lock (pkg/etcd).
	RestartLockKey = etcdpkg.RestartLockKey

	// lockWait bounds one attempt to take the restart lock; the next probe tries again.
	lockWait = 5 * time.Second
	// stopGrace is how long etcd gets to stop on SIGTERM before SIGKILL, when nodepkid stops.
	stopGrace = 10 * time.Second
	// restartStopGrace is the same for a restart under the lock, once the member leads nothing.
	restartStopGrace = time.Second
	// probeTimeout bounds one status call to one member.
	probeTimeout = time.Second
	// healthyResetsBackoff: a member healthy that long after a start has its backoff reset.
	healthyResetsBackoff = 30 * time.Second
)

// MemberStatusController runs the etcd member of a control plane and reports it as
// MemberStatus/local. It runs on supervised.Loop rather than a generic controller because its
// subject is a process: it wakes on process exits and on a probe timer as well as on resource events.
//
// The member bootstraps a new cluster only when Bootstrap/etcd exists (`nodepkictl bootstrap`);
// otherwise it joins a running member (learner first, promoted once in sync) found at the control
// plane endpoint's host or a control plane in the cluster Members, so two control planes that
// start together never form two clusters. A member with data just starts.
//
// etcd runs in its own process group with a pidfile; when the controller starts it adopts a
// running etcd of its data directory, so that a crash of nodepkid costs etcd nothing. A process
// that exits is started again with exponential backoff.
//
// etcd never reloads its CA file. When PKIFiles' trust bundle differs from the one the process
// loaded, the member is restarted under a cluster-wide lock held in etcd itself, only while every
// member is healthy, and the lock is released once the member is back, healthy and caught up with
// the leader: two members are never down at once. A new key pair needs nothing: etcd reads its
// key pairs on every new connection.
type MemberStatusController struct {
	// Binary is the etcd executable.
	Binary string
	// StateDir holds the data directory (etcd/), the pidfile (etcd.pid) and the log (etcd.log).
	StateDir string
	// Address is the node address etcd listens on (client :2379, peer :2380).
	Address netip.Addr
	// ProbeInterval, MinBackoff, MaxBackoff and ComeBackTimeout override the defaults.
	ProbeInterval, MinBackoff, MaxBackoff, ComeBackTimeout time.Duration

	// sup is the running process and its restarts; it outlives a restart of Run.
	sup     process.Supervision
	adopted bool
	client  *memberClient
}

// memberClient is an etcd client of the member's own admin credentials, rebuilt when the files change.
type memberClient struct {
	key    string
	tls    *tls.Config
	client *clientv3.Client
}

// Name implements controller.Controller interface.
func (ctrl *MemberStatusController) Name() string {
	return "etcd.MemberStatusController"
}

// Inputs implements controller.Controller interface.
func (ctrl *MemberStatusController) Inputs() []controller.Input {
	return []controller.Input{
		configview.Input(),
		safe.Input[*etcd.PKIFiles](controller.InputWeak),
		safe.Input[*etcd.Bootstrap](controller.InputWeak),
		safe.Input[*cluster.Member](controller.InputWeak),
	}
}

// Outputs implements controller.Controller interface.
func (ctrl *MemberStatusController) Outputs() []controller.Output {
	return []controller.Output{{Type: etcd.MemberStatusType, Kind: controller.OutputExclusive}}
}

func (ctrl *MemberStatusController) config() etcdpkg.MemberConfig {
	return etcdpkg.MemberConfig{
		Binary:  ctrl.Binary,
		DataDir: filepath.Join(ctrl.StateDir, "etcd"),
		LogFile: filepath.Join(ctrl.StateDir, "etcd.log"),
		PIDFile: filepath.Join(ctrl.StateDir, "etcd.pid"),
		Address: ctrl.Address,
	}
}

// Run implements controller.Controller interface.
func (ctrl *MemberStatusController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	ctrl.sup.Name, ctrl.sup.Address, ctrl.sup.LogFile = "etcd", ctrl.Address, ctrl.config().LogFile
	ctrl.sup.MinBackoff, ctrl.sup.MaxBackoff = cmp.Or(ctrl.MinBackoff, DefaultMinBackoff), cmp.Or(ctrl.MaxBackoff, DefaultMaxBackoff)

	defer ctrl.closeClient()

	if !ctrl.adopted {
		ctrl.adopted = true

		proc, err := etcdpkg.Adopt(ctrl.config())
		if err != nil {
			logger.Warn("error adopting a running etcd", zap.Error(err))
		}

		if proc != nil {
			ctrl.sup.Proc = proc
			ctrl.sup.StartedAt = time.Now()

			logger.Info("adopted running etcd", zap.Int("pid", proc.PID))
		}
	}

	return supervised.Loop[etcd.MemberStatusSpec, etcd.MemberStatusExtension]{
		Sup:           &ctrl.sup,
		ProbeInterval: cmp.Or(ctrl.ProbeInterval, DefaultProbeInterval),
		StopGrace:     stopGrace,
		StatusID:      etcd.LocalMemberID,
		Reconcile:     ctrl.reconcile,
	}.Run(ctx, r, logger)
}

// reconcile starts, probes or restarts the member and returns its status.
func (ctrl *MemberStatusController) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger) etcd.MemberStatusSpec {
	status := etcd.MemberStatusSpec{Name: etcdpkg.MemberName(ctrl.Address), Restarts: ctrl.sup.Restarts}

	files, err := safe.ReaderGetByID[*etcd.PKIFiles](ctx, r, etcd.PKIFilesID)
	if err != nil {
		if !state.IsNotFoundError(err) {
			status.LastError = fmt.Sprintf("error reading the etcd PKI files: %v", err)
		} else {
			status.LastError = "waiting for the etcd PKI files"
		}

		status.State = etcd.StateStarting

		return ctrl.withProcess(status)
	}

	if err = ctrl.ensureClient(files.TypedSpec()); err != nil {
		status.State = etcd.StateFailed
		status.LastError = err.Error()

		return ctrl.withProcess(status)
	}

	if ctrl.sup.Proc == nil {
		ctrl.start(ctx, r, logger, files.TypedSpec(), &status)

		return ctrl.withProcess(status)
	}

	health := etcdpkg.Status(ctx, ctrl.client.client, etcdpkg.ClientURL(ctrl.Address), probeTimeout)
	ctrl.fillHealth(&status, health)

	if health.IsLearner {
		ctrl.promote(ctx, r, logger, health.MemberID)
	}

	if status.Healthy {
		ctrl.sup.ResetBackoffAfter(healthyResetsBackoff)
	}

	if status.Healthy && files.TypedSpec().TrustBundleDigest != ctrl.sup.Proc.Tag {
		ctrl.rollingRestart(ctx, r, logger, files.TypedSpec(), &status)
	}

	return ctrl.withProcess(status)
}

func (ctrl *MemberStatusController) withProcess(status etcd.MemberStatusSpec) etcd.MemberStatusSpec {
	status.Restarts = ctrl.sup.Restarts

	if ctrl.sup.Proc != nil {
		status.Running = true
		status.PID = ctrl.sup.Proc.PID
		status.TrustBundleDigest = ctrl.sup.Proc.Tag
	}

	if status.LastError == "" && !status.Healthy {
		status.LastError = ctrl.sup.LastErr
	}

	return status
}

func (ctrl *MemberStatusController) fillHealth(status *etcd.MemberStatusSpec, health etcdpkg.EndpointHealth) {
	status.State = etcd.StateStarting

	if health.MemberID != 0 {
		status.MemberID = etcdpkg.FormatID(health.MemberID)
	}

	if health.Leader != 0 {
		status.LeaderID = etcdpkg.FormatID(health.Leader)
	}

	switch {
	case health.Err != nil:
		status.LastError = health.Err.Error()
	case health.IsLearner:
		status.LastError = "learner: catching up before promotion to a voting member"
	case health.Healthy():
		status.State = etcd.StateRunning
		status.Healthy = true
		ctrl.sup.LastErr = ""
	default:
		status.LastError = "no leader"
	}
}

// start starts the member: with its data, as the first member of a new cluster when asked to
// bootstrap, or as a new member of the running cluster.
func (ctrl *MemberStatusController) start(ctx context.Context, r controller.Runtime, logger *zap.Logger, files *etcd.PKIFilesSpec, status *etcd.MemberStatusSpec) {
	status.State = etcd.StateFailed

	if time.Now().Before(ctrl.sup.RetryAt) {
		status.LastError = ctrl.sup.LastErr

		return
	}

	cfg := ctrl.config()
	cfg.PKIDir = files.Dir

	if _, err := os.Stat(ctrl.Binary); err != nil {
		ctrl.fail(logger, status, fmt.Errorf("etcd binary %s: %w (fix --etcd-binary)", ctrl.Binary, err))

		return
	}

	switch {
	case cfg.HasData():
	case ctrl.bootstrapRequested(ctx, r):
		cfg.InitialCluster = etcdpkg.InitialCluster(map[string][]string{etcdpkg.MemberName(ctrl.Address): {etcdpkg.PeerURL(ctrl.Address)}})
		cfg.InitialClusterState = "new"

		logger.Info("bootstrapping a new etcd cluster")
	default:
		initial, err := ctrl.join(ctx, r, logger)
		if err != nil {
			status.State = etcd.StateWaitingBootstrap
			status.LastError = err.Error()
			ctrl.sup.Failed(logger, err)

			return
		}

		cfg.InitialCluster = initial
		cfg.InitialClusterState = "existing"
	}

	proc, err := etcdpkg.Start(cfg, files.TrustBundleDigest)
	if err != nil {
		ctrl.fail(logger, status, err)

		return
	}

	ctrl.sup.Started(proc)
	status.State = etcd.StateStarting
	status.LastError = ""

	logger.Info("started etcd", zap.Int("pid", proc.PID), zap.String("trust_bundle_digest", files.TrustBundleDigest))
}

func (ctrl *MemberStatusController) fail(logger *zap.Logger, status *etcd.MemberStatusSpec, err error) {
	status.State = etcd.StateFailed
	status.LastError = err.Error()
	ctrl.sup.Failed(logger, err)
}

func (ctrl *MemberStatusController) bootstrapRequested(ctx context.Context, r controller.Reader) bool {
	_, err := safe.ReaderGetByID[*etcd.Bootstrap](ctx, r, etcd.BootstrapID)

	return err == nil
}

// join adds this node to the running cluster as a learner and returns the --initial-cluster to
// start with. A member of this peer URL that never started (a previous attempt) is reused; one
// that did start belongs to lost data and is replaced.
func (ctrl *MemberStatusController) join(ctx context.Context, r controller.Reader, logger *zap.Logger) (string, error) {
	endpoints, err := ctrl.joinEndpoints(ctx, r)
	if err != nil {
		return "", err
	}

	if len(endpoints) == 0 {
		return "", errors.New("no etcd cluster to join: bootstrap one control plane with `nodepkictl bootstrap -n <address>`")
	}

	client, err := etcdpkg.NewClient(endpoints, ctrl.client.tls)
	if err != nil {
		return "", err
	}

	defer client.Close()

	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	list, err := client.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("no etcd cluster to join at %v (bootstrap one control plane with `nodepkictl bootstrap -n <address>`): %w", endpoints, err)
	}

	peerURL := etcdpkg.PeerURL(ctrl.Address)

	var selfID uint64

	for _, m := range list.Members {
		switch {
		case slices.Contains(m.PeerURLs, peerURL) && m.Name == "":
			selfID = m.ID
		case slices.Contains(m.PeerURLs, peerURL):
			logger.Warn("replacing the etcd member of this address: its data is gone", zap.String("member_id", etcdpkg.FormatID(m.ID)))

			if _, err = client.MemberRemove(ctx, m.ID); err != nil {
				return "", fmt.Errorf("error removing the stale etcd member %s: %w", etcdpkg.FormatID(m.ID), err)
			}
		case m.Name == "" || m.IsLearner:
			// etcd takes one learner at a time.
			return "", fmt.Errorf("waiting for etcd member %s (%v) to finish joining", etcdpkg.FormatID(m.ID), m.PeerURLs)
		}
	}

	members := list.Members

	if selfID == 0 {
		added, err := client.MemberAddAsLearner(ctx, []string{peerURL})
		if err != nil {
			return "", fmt.Errorf("error adding this node to the etcd cluster: %w", err)
		}

		selfID = added.Member.ID
		members = added.Members

		logger.Info("added to the etcd cluster as a learner", zap.String("member_id", etcdpkg.FormatID(selfID)))
	}

	initial := map[string][]string{}

	for _, m := range members {
		name := m.Name
		if m.ID == selfID {
			name = etcdpkg.MemberName(ctrl.Address)
		}

		if name != "" {
			initial[name] = append(initial[name], m.PeerURLs...)
		}
	}

	return etcdpkg.InitialCluster(initial), nil
}

// ensureClient (re)builds the member's own client from the admin key pair and ca.crt on disk.
func (ctrl *MemberStatusController) ensureClient(files *etcd.PKIFilesSpec) error {
	key := files.TrustBundleDigest + files.AdminDigest
	if ctrl.client != nil && ctrl.client.key == key {
		return nil
	}

	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(files.Dir, name)) }

	ca, err := read(etcdpkg.CAFile)
	if err != nil {
		return fmt.Errorf("error reading the etcd PKI files: %w", err)
	}

	crt, err := read(etcdpkg.AdminCertFile)
	if err != nil {
		return fmt.Errorf("error reading the etcd PKI files: %w", err)
	}

	keyPEM, err := read(etcdpkg.AdminKeyFile)
	if err != nil {
		return fmt.Errorf("error reading the etcd PKI files: %w", err)
	}

	tlsConfig, err := etcdpkg.TLSConfig(ca, crt, keyPEM)
	if err != nil {
		return err
	}

	client, err := etcdpkg.NewClient([]string{etcdpkg.ClientURL(ctrl.Address)}, tlsConfig)
	if err != nil {
		return err
	}

	ctrl.closeClient()
	ctrl.client = &memberClient{key: key, tls: tlsConfig, client: client}

	return nil
}

func (ctrl *MemberStatusController) closeClient() {
	if ctrl.client != nil {
		ctrl.client.client.Close()
		ctrl.client = nil
	}
}

// joinEndpoints are where a running member may be: the control plane endpoint's host and every
// other control plane this node knows of.
func (ctrl *MemberStatusController) joinEndpoints(ctx context.Context, r controller.Reader) ([]string, error) {
	var hosts []string

	doc, err := configview.Read(ctx, r)
	if err != nil {
		return nil, err
	}

	if doc != nil && doc.Cluster != nil && doc.Cluster.ControlPlane != nil {
		if u, parseErr := url.Parse(doc.Cluster.ControlPlane.Endpoint); parseErr == nil && u.Hostname() != "" {
			hosts = append(hosts, u.Hostname())
		}
	}

	members, err := safe.ReaderListAll[*cluster.Member](ctx, r)
	if err != nil {
		return nil, fmt.Errorf("error listing cluster members: %w", err)
	}

	for member := range members.All() {
		if member.TypedSpec().MachineType == machineconfig.TypeControlPlane || member.TypedSpec().MachineType == machineconfig.TypeInit {
			hosts = append(hosts, member.Metadata().ID())
		}
	}

	var endpoints []string

	for _, host := range hosts {
		if addr, parseErr := netip.ParseAddr(host); parseErr == nil && addr == ctrl.Address {
			continue
		}

		endpoint := "https://" + net.JoinHostPort(host, fmt.Sprint(etcdpkg.ClientPort))
		if !slices.Contains(endpoints, endpoint) {
			endpoints = append(endpoints, endpoint)
		}
	}

	return endpoints, nil
}

// promote makes the learner a voting member, through the members it joined (a learner serves no
// membership calls); etcd refuses until it is in sync, and the next probe tries again.
func (ctrl *MemberStatusController) promote(ctx context.Context, r controller.Reader, logger *zap.Logger, id uint64) {
	endpoints, err := ctrl.joinEndpoints(ctx, r)
	if err != nil || len(endpoints) == 0 {
		logger.Warn("no voting member to promote this learner through", zap.Error(err))

		return
	}

	client, err := etcdpkg.NewClient(endpoints, ctrl.client.tls)
	if err != nil {
		logger.Warn("error connecting to promote this learner", zap.Error(err))

		return
	}

	defer client.Close()

	ctx, cancel := context.WithTimeout(ctx, probeTimeout*3)
	defer cancel()

	if _, err = client.MemberPromote(ctx, id); err != nil {
		logger.Debug("learner not promoted yet", zap.Error(err))

		return
	}

	logger.Info("promoted to a voting etcd member", zap.String("member_id", etcdpkg.FormatID(id)))
}

// rollingRestart restarts the member to load a new trust bundle, under the cluster-wide lock and
// only while every member is healthy; it releases the lock once the member is back, healthy and
// caught up. Whatever stops it early is retried at the next probe.
func (ctrl *MemberStatusController) rollingRestart(
	ctx context.Context, r controller.Runtime, logger *zap.Logger, files *etcd.PKIFilesSpec, status *etcd.MemberStatusSpec,
) {
	endpoints, err := ctrl.memberEndpoints(ctx)
	if err != nil {
		status.LastError = fmt.Sprintf("trust bundle changed, restart pending: %v", err)

		return
	}

	// The lock's session is kept alive through the other members: it survives this member's
	// restart, and its keepalive stream does not hold up this member's shutdown.
	client, err := etcdpkg.NewClient(otherEndpoints(endpoints, etcdpkg.ClientURL(ctrl.Address)), ctrl.client.tls)
	if err != nil {
		status.LastError = fmt.Sprintf("trust bundle changed, restart pending: %v", err)

		return
	}

	defer client.Close()

	lock, err := etcdpkg.LockRestart(ctx, client, lockWait)
	if err != nil {
		status.LastError = fmt.Sprintf("trust bundle changed, restart pending: %v", err)

		return
	}

	defer func() {
		if unlockErr := lock.Unlock(ctx, lockWait); unlockErr != nil {
			logger.Warn("error releasing the restart lock (it expires with its session)", zap.Error(unlockErr))
		}
	}()

	// Checked under the lock: a member that holds it or came back unhealthy is seen here.
	if unhealthy := ctrl.unhealthyMembers(ctx, endpoints); len(unhealthy) > 0 {
		status.LastError = fmt.Sprintf("trust bundle changed, restart pending: members not healthy: %v", unhealthy)

		return
	}

	logger.Info("restarting etcd to load the new trust bundle",
		zap.String("from", ctrl.sup.Proc.Tag), zap.String("to", files.TrustBundleDigest))

	// The restart is visible while it lasts: it holds the lock, and the other members wait.
	restarting := ctrl.withProcess(*status)
	restarting.State = etcd.StateRestarting
	restarting.Healthy = false

	if err = safe.WriterModify(ctx, r, etcd.NewMemberStatus(etcd.LocalMemberID), func(res *etcd.MemberStatus) error {
		*res.TypedSpec() = restarting

		return nil
	}); err != nil {
		status.LastError = fmt.Sprintf("error writing etcd member status: %v", err)

		return
	}

	ctrl.handOverLeadership(ctx, logger, endpoints)

	stopping := time.Now()

	// etcd's graceful stop waits up to its request timeout (7 s) for client streams (watches,
	// lease keepalives) to end. Once it leads nothing, killing it loses nothing: every write it
	// acknowledged is in its fsynced WAL, and the leader has it too.
	if err = ctrl.sup.Proc.Stop(ctx, restartStopGrace); err != nil {
		status.LastError = err.Error()

		return
	}

	logger.Info("etcd stopped for the restart", zap.Duration("took", time.Since(stopping)))

	ctrl.sup.Proc = nil

	cfg := ctrl.config()
	cfg.PKIDir = files.Dir

	proc, err := etcdpkg.Start(cfg, files.TrustBundleDigest)
	if err != nil {
		ctrl.fail(logger, status, err)

		return
	}

	ctrl.sup.Started(proc)

	if err = ctrl.waitCaughtUp(ctx, client, endpoints); err != nil {
		ctrl.sup.LastErr = fmt.Sprintf("etcd did not come back after a trust-bundle restart: %v", err)
		status.State = etcd.StateFailed
		status.Healthy = false
		status.LastError = ctrl.sup.LastErr

		logger.Error("etcd did not come back after a trust-bundle restart", zap.Error(err))

		return
	}

	health := etcdpkg.Status(ctx, ctrl.client.client, etcdpkg.ClientURL(ctrl.Address), probeTimeout)
	ctrl.fillHealth(status, health)

	logger.Info("etcd restarted with the new trust bundle", zap.Int("pid", proc.PID), zap.Duration("down", time.Since(stopping)))
}

// otherEndpoints are the endpoints without self, or all of them when there is no other.
func otherEndpoints(endpoints []string, self string) []string {
	others := slices.DeleteFunc(slices.Clone(endpoints), func(e string) bool { return e == self })
	if len(others) == 0 {
		return endpoints
	}

	return others
}

// handOverLeadership moves the raft leadership to another member when this one leads, so that
// its restart costs no election. A failure only makes the restart cost one.
func (ctrl *MemberStatusController) handOverLeadership(ctx context.Context, logger *zap.Logger, endpoints []string) {
	self := etcdpkg.Status(ctx, ctrl.client.client, etcdpkg.ClientURL(ctrl.Address), probeTimeout)
	if self.Err != nil || self.Leader != self.MemberID {
		return
	}

	for _, endpoint := range endpoints {
		other := etcdpkg.Status(ctx, ctrl.client.client, endpoint, probeTimeout)
		if other.Err != nil || other.MemberID == self.MemberID || other.IsLearner {
			continue
		}

		moveCtx, cancel := context.WithTimeout(ctx, 3*probeTimeout)
		_, err := ctrl.client.client.MoveLeader(moveCtx, other.MemberID)

		cancel()

		if err != nil {
			logger.Warn("error handing the etcd leadership over before the restart", zap.Error(err))

			return
		}

		logger.Info("handed the etcd leadership over before the restart", zap.String("to", etcdpkg.FormatID(other.MemberID)))

		return
	}
}

// memberEndpoints lists the client URLs of every member.
func (ctrl *MemberStatusController) memberEndpoints(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*probeTimeout)
	defer cancel()

	list, err := ctrl.client.client.MemberList(ctx)
	if err != nil {
		return nil, fmt.Errorf("error listing etcd members: %w", err)
	}

	var endpoints []string

	for _, m := range list.Members {
		if len(m.ClientURLs) == 0 {
			return nil, fmt.Errorf("etcd member %s has not started", etcdpkg.FormatID(m.ID))
		}

		endpoints = append(endpoints, m.ClientURLs[0])
	}

	return endpoints, nil
}

func (ctrl *MemberStatusController) unhealthyMembers(ctx context.Context, endpoints []string) []string {
	var unhealthy []string

	for _, endpoint := range endpoints {
		if h := etcdpkg.Status(ctx, ctrl.client.client, endpoint, probeTimeout); !h.Healthy() || h.IsLearner {
			unhealthy = append(unhealthy, endpoint)
		}
	}

	return unhealthy
}

// waitCaughtUp waits until the member answers, knows a leader and has applied the leader's log
// as it was when the member first answered.
func (ctrl *MemberStatusController) waitCaughtUp(ctx context.Context, client *clientv3.Client, endpoints []string) error {
	ctx, cancel := context.WithTimeout(ctx, cmp.Or(ctrl.ComeBackTimeout, DefaultComeBackTimeout))
	defer cancel()

	self := etcdpkg.ClientURL(ctrl.Address)
	tick := time.NewTicker(100 * time.Millisecond)

	defer tick.Stop()

	var target uint64

	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("not healthy and caught up in time: %w", ctx.Err())
		case <-ctrl.sup.Proc.Exited():
			return fmt.Errorf("etcd exited: %w", ctrl.sup.Proc.Err())
		case <-tick.C:
		}

		h := etcdpkg.Status(ctx, client, self, probeTimeout)
		if !h.Healthy() {
			continue
		}

		if target == 0 {
			leader := h.Leader

			for _, endpoint := range endpoints {
				if l := etcdpkg.Status(ctx, client, endpoint, probeTimeout); l.Err == nil && l.MemberID == leader {
					target = l.RaftIndex
				}
			}

			if target == 0 {
				continue
			}
		}

		if h.AppliedIndex >= target {
			return nil
		}
	}
}
