package main

import (
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

	controllerspki "github.com/nodepki/nodepki/controllers/pki"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/runtime"
	"github.com/nodepki/nodepki/runtime/api"
	"github.com/nodepki/nodepki/runtime/trustd"
)

type daemonOptions struct {
	configPath      string
	stateDir        string
	address         string
	apiPort         int
	trustdPort      int
	trustdEndpoints []string
	hostAddresses   bool
	logLevel        string
	etcdBinary      string
}

func run(ctx context.Context, opts daemonOptions) error {
	started := time.Now()

	logger, err := newLogger(opts.logLevel)
	if err != nil {
		return err
	}

	defer logger.Sync() //nolint:errcheck

	address, err := netip.ParseAddr(opts.address)
	if err != nil {
		return fmt.Errorf("--address %q is not an IP address: %w", opts.address, err)
	}

	for flag, port := range map[string]int{"--api-port": opts.apiPort, "--trustd-port": opts.trustdPort} {
		if port < 1 || port > 65535 {
			return fmt.Errorf("%s %d is not a port: use 1-65535", flag, port)
		}
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

	hostname, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("error reading hostname: %w", err)
	}

	// A missing or broken binary is reported in the etcd member status and the log, and breaks
	// nothing else; only the path is made absolute here.
	etcdBinary := opts.etcdBinary
	if etcdBinary != "" {
		if etcdBinary, err = filepath.Abs(etcdBinary); err != nil {
			return fmt.Errorf("--etcd-binary %q: %w", opts.etcdBinary, err)
		}
	}

	rt, err := runtime.New(runtime.Options{
		StateDir:      opts.stateDir,
		Logger:        logger,
		Addresses:     []netip.Addr{address},
		HostAddresses: opts.hostAddresses,
		Hostname:      hostname,
		EtcdBinary:    etcdBinary,
	})
	if err != nil {
		return err
	}

	defer rt.Close() //nolint:errcheck

	cfg, err := bootConfig(ctx, rt, fileConfig, fileData, opts.configPath, logger)
	if err != nil {
		return err
	}

	if err = rt.RegisterController(&controllerspki.WorkerAPICertificateController{
		Hostname:        hostname,
		TrustdEndpoints: opts.trustdEndpoints,
		SourceAddress:   address,
	}); err != nil {
		return fmt.Errorf("error registering the worker API certificate controller: %w", err)
	}

	apiListener, err := net.Listen("tcp", net.JoinHostPort(address.String(), strconv.Itoa(opts.apiPort)))
	if err != nil {
		return fmt.Errorf("error listening for the node API: %w", err)
	}

	apiServer, err := api.New(api.Options{
		State:       rt.State(),
		Config:      rt,
		NodeAddress: address,
		MachineType: cfg.Document().Machine.Type,
		Logger:      logger.With(zap.String("component", "api")),
		APIPort:     opts.apiPort,
	})
	if err != nil {
		return err
	}

	group, ctx := errgroup.WithContext(ctx)

	group.Go(func() error { return rt.Run(ctx) })
	group.Go(func() error { return apiServer.Serve(ctx, apiListener) })

	if cfg.Document().Machine.IsControlPlane() {
		if err = serveTrustd(ctx, group, rt.State(), address, opts.trustdPort, logger); err != nil {
			return err
		}
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

func serveTrustd(ctx context.Context, group *errgroup.Group, st state.State, address netip.Addr, port int, logger *zap.Logger) error {
	listener, err := net.Listen("tcp", net.JoinHostPort(address.String(), strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("error listening for trustd: %w", err)
	}

	server, err := trustd.New(trustd.Options{State: st, Logger: logger.With(zap.String("component", "trustd"))})
	if err != nil {
		return err
	}

	group.Go(func() error { return server.Serve(ctx, listener) })

	return nil
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
// --config file (already validated), which it persists.
func bootConfig(ctx context.Context, rt *runtime.Runtime, file *machineconfig.Config, fileData []byte, path string, logger *zap.Logger) (*machineconfig.Config, error) {
	raw, err := rt.MachineConfig(ctx)

	switch {
	case err == nil:
		if file != nil {
			logger.Info("using the persisted machine config", zap.String("ignored_file", path))
		}

		return machineconfig.Parse(raw)
	case !state.IsNotFoundError(err):
		return nil, fmt.Errorf("error reading the persisted machine config: %w", err)
	case file == nil:
		return nil, errors.New("no persisted machine config: pass --config FILE on first boot")
	}

	if err = rt.SetMachineConfig(ctx, fileData); err != nil {
		return nil, fmt.Errorf("error persisting the machine config: %w", err)
	}

	logger.Info("machine config loaded from file", zap.String("file", path))

	return file, nil
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
