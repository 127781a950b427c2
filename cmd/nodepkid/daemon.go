package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"

	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/metrics"
	"github.com/nodepki/nodepki/runtime"
	"github.com/nodepki/nodepki/runtime/api"
)

type daemonOptions struct {
	configPath      string
	stateDir        string
	address         string
	hostname        string
	apiPort         int
	trustdPort      int
	trustdEndpoints []string
	controlPlanes   []string
	hostAddresses   bool
	logLevel        string
	etcdBinary      string
	kubeAPIServer   string
	metricsAddress  string
}

func run(ctx context.Context, opts daemonOptions) error {
	started := time.Now()

	logger, err := newLogger(opts.logLevel)
	if err != nil {
		return err
	}

	defer logger.Sync() //nolint:errcheck // syncing stderr fails on some terminals; nothing to do at exit

	address, err := netip.ParseAddr(opts.address)
	if err != nil {
		return fmt.Errorf("--address %q is not an IP address: %w", opts.address, err)
	}

	for flag, port := range map[string]int{"--api-port": opts.apiPort, "--trustd-port": opts.trustdPort} {
		if port < 1 || port > 65535 {
			return fmt.Errorf("%s %d is not a port: use 1-65535", flag, port)
		}
	}

	if err = checkMetricsAddress(opts.metricsAddress); err != nil {
		return err
	}

	// The config file is checked before anything is created, so that a bad file or a missing
	// --config on first boot leaves no state behind.
	fileConfig, fileData, err := readConfigFile(opts.configPath)
	if err != nil {
		return err
	}

	if fileConfig == nil {
		if _, statErr := os.Stat(filepath.Join(opts.stateDir, runtime.StateFile)); statErr != nil {
			return errors.New("no persisted machine config in --state-dir: pass --config FILE on first boot")
		}
	}

	hostname, err := nodeHostname(opts.hostname)
	if err != nil {
		return err
	}

	// A missing or broken binary is reported in the etcd member status and the log, and breaks
	// nothing else; only the path is made absolute here.
	etcdBinary := opts.etcdBinary
	if etcdBinary != "" {
		if etcdBinary, err = filepath.Abs(etcdBinary); err != nil {
			return fmt.Errorf("--etcd-binary %q: %w", opts.etcdBinary, err)
		}
	}

	kubeAPIServer, err := kubeAPIServerBinary(opts)
	if err != nil {
		return err
	}

	// The counters exist before the servers and the runtime that feed them.
	counters := metrics.NewCounters()

	auditLog, err := openAuditLog(opts.stateDir, address, logger)
	if err != nil {
		return err
	}

	defer auditLog.Close()

	rt, err := runtime.New(runtime.Options{
		StateDir:      opts.stateDir,
		Logger:        logger,
		Addresses:     []netip.Addr{address},
		HostAddresses: opts.hostAddresses,
		Hostname:      hostname,
		Trustd: runtime.TrustdOptions{
			Interceptor:   counters.TrustdUnaryInterceptor(),
			Listen:        netip.AddrPortFrom(address, uint16(opts.trustdPort)), //nolint:gosec // checked to be a port above
			Endpoints:     opts.trustdEndpoints,
			SourceAddress: address,
			ControlPlanes: opts.controlPlanes,
			Audit:         auditLog,
		},
		EtcdBinary:          etcdBinary,
		KubeAPIServerBinary: kubeAPIServer,
	})
	if err != nil {
		return err
	}

	defer rt.Close()

	cfg, firstBoot, err := bootConfig(ctx, rt, fileConfig, fileData, opts, logger)
	if err != nil {
		return err
	}

	// Everything that can fail before the node serves (ports in use, say) runs before a first
	// boot persists its config: a boot that never served leaves the next --config in charge.
	apiListener, err := net.Listen("tcp", net.JoinHostPort(address.String(), strconv.Itoa(opts.apiPort)))
	if err != nil {
		return fmt.Errorf("error listening for the node API: %w", err)
	}

	defer apiListener.Close() // Serve closes it; this covers the early returns

	nodeMetrics, err := metrics.New(rt.State(), counters)
	if err != nil {
		return err
	}

	apiServer, err := api.New(api.Options{
		StreamInterceptor: counters.APIStreamInterceptor(),
		UnaryInterceptor:  counters.ConfigApplyInterceptor(),
		State:             rt.State(),
		Config:            rt,
		NodeAddress:       address,
		MachineType:       cfg.Document().Machine.Type,
		Logger:            logger.With(zap.String("component", "api")),
		APIPort:           opts.apiPort,
		ControlPlanes:     opts.controlPlanes,
		Audit:             auditLog,
	})
	if err != nil {
		return err
	}

	if err = rt.ListenTrustd(cfg.Document().Machine.IsControlPlane()); err != nil {
		return err
	}

	if firstBoot {
		if err = rt.SetMachineConfig(ctx, fileData); err != nil {
			return fmt.Errorf("error persisting the machine config: %w", err)
		}

		counters.ConfigApplied(metrics.SourceBoot)
		logger.Info("machine config loaded from file", zap.String("file", opts.configPath))
	}

	group, ctx := errgroup.WithContext(ctx)

	// Observing starts before the controllers run, so that the first certificates count.
	observeCertificates, err := nodeMetrics.ObserveCertificates(ctx)
	if err != nil {
		return err
	}

	group.Go(observeCertificates)

	group.Go(func() error { return rt.Run(ctx) })
	group.Go(func() error { return auditLog.Run(ctx) })
	group.Go(func() error { return apiServer.Serve(ctx, apiListener) })

	if err = serveMetrics(ctx, group, nodeMetrics, opts.metricsAddress, logger); err != nil {
		return err
	}

	group.Go(func() error {
		if waitErr := apiServer.WaitReady(ctx); waitErr != nil {
			return nil //nolint:nilerr // shutting down before ready is not an error
		}

		logger.Info("node API serving",
			zap.String("address", apiListener.Addr().String()),
			zap.Duration("since_start", time.Since(started)),
		)

		return nil
	})

	err = group.Wait()
	if errors.Is(err, context.Canceled) || ctx.Err() != nil && err == nil {
		logger.Info("shut down")

		return nil
	}

	return err
}

// kubeAPIServerBinary is --kube-apiserver-binary made absolute. kube-apiserver uses the node's own
// etcd member, so it needs --etcd-binary; like etcd's, a missing or broken binary is reported in
// the kube-apiserver status and the log.
func kubeAPIServerBinary(opts daemonOptions) (string, error) {
	if opts.kubeAPIServer == "" {
		return "", nil
	}

	if opts.etcdBinary == "" {
		return "", errors.New("--kube-apiserver-binary needs --etcd-binary: kube-apiserver runs against the node's own etcd member, " +
			"which nodepkid runs with --etcd-binary PATH")
	}

	path, err := filepath.Abs(opts.kubeAPIServer)
	if err != nil {
		return "", fmt.Errorf("--kube-apiserver-binary %q: %w", opts.kubeAPIServer, err)
	}

	return path, nil
}

// openAuditLog opens <state-dir>/audit.log, creating the state directory (0700) as the runtime
// does; it runs after the --config checks, so a refused first boot still leaves nothing behind.
func openAuditLog(stateDir string, address netip.Addr, logger *zap.Logger) (*audit.Log, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("error creating --state-dir: %w", err)
	}

	return audit.Open(audit.Options{Dir: stateDir, Node: address.String(), Logger: logger.With(zap.String("component", "audit"))})
}

// nodeHostname is --hostname, checked as a host name, or the machine's host name.
func nodeHostname(flag string) (string, error) {
	if flag == "" {
		hostname, err := os.Hostname()
		if err != nil {
			return "", fmt.Errorf("error reading hostname (set --hostname): %w", err)
		}

		return hostname, nil
	}

	if err := certs.CheckDNSName(flag); err != nil {
		return "", fmt.Errorf("--hostname %q is not a host name (%w): use letters, digits and hyphens in dot-separated labels of 1-63 characters", flag, err)
	}

	return flag, nil
}

// readConfigFile parses and validates the --config file and returns it with its exact bytes
// (persisted as given, comments included); nil when no file is given.
func readConfigFile(path string) (*machineconfig.Config, []byte, error) {
	if path == "" {
		return nil, nil, nil
	}

	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("error reading --config: %w", err)
	}

	cfg, err := machineconfig.Parse(data)
	if err != nil {
		return nil, nil, fmt.Errorf("--config %s: %w", path, err)
	}

	if err = cfg.Validate(); err != nil {
		return nil, nil, fmt.Errorf("--config %s is invalid: %w", path, err)
	}

	return cfg, data, nil
}

// bootConfig returns the config the node runs with: the persisted one if there is one, else the
// --config file (already validated), which the caller persists once the node can serve
// (firstBoot).
func bootConfig(ctx context.Context, rt *runtime.Runtime, file *machineconfig.Config, fileData []byte, opts daemonOptions,
	logger *zap.Logger,
) (cfg *machineconfig.Config, firstBoot bool, err error) {
	raw, err := rt.MachineConfig(ctx)

	switch {
	case err == nil:
	case !state.IsNotFoundError(err):
		return nil, false, fmt.Errorf("error reading the persisted machine config: %w", err)
	case file == nil:
		return nil, false, errors.New("no persisted machine config: pass --config FILE on first boot")
	default:
		return file, true, nil
	}

	switch {
	case file == nil:
	case bytes.Equal(raw, fileData):
		logger.Info("using the persisted machine config, the same as --config", zap.String("file", opts.configPath))
	default:
		logger.Warn("--config differs from the persisted machine config and is ignored: the node runs with the persisted one; "+
			"to change it, apply the file to the running node (nodepkictl -n "+opts.address+" apply-config -f "+opts.configPath+
			"), or start with an empty --state-dir",
			zap.String("ignored_file", opts.configPath), zap.String("state_dir", opts.stateDir))
	}

	cfg, err = machineconfig.Parse(raw)

	return cfg, false, err
}

func newLogger(level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}

	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Encoding = "console"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.Sampling = nil

	return cfg.Build()
}
