package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/nodepki/nodepki/pkg/metrics"
)

// checkMetricsAddress refuses a --metrics-address that is not IP:PORT (or :PORT for every
// address) before anything is created.
func checkMetricsAddress(address string) error {
	if address == "" {
		return nil
	}

	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("--metrics-address %q: want ADDR:PORT, like 127.0.0.2:9180: %w", address, err)
	}

	if host != "" {
		if _, err = netip.ParseAddr(host); err != nil {
			return fmt.Errorf("--metrics-address %q: %q is not an IP address: want ADDR:PORT, like 127.0.0.2:9180", address, host)
		}
	}

	if port, err := strconv.Atoi(portText); err != nil || port < 1 || port > 65535 {
		return fmt.Errorf("--metrics-address %q: port %q is not a port: use 1-65535", address, portText)
	}

	return nil
}

// serveMetrics serves /metrics on address in the group; an empty address turns metrics off.
func serveMetrics(ctx context.Context, group *errgroup.Group, nodeMetrics *metrics.Metrics, address string, logger *zap.Logger) error {
	if address == "" {
		return nil
	}

	listener, err := net.Listen("tcp", address)
	if err != nil {
		return fmt.Errorf("error listening for metrics on %s: %w", address, err)
	}

	logger.Info("metrics serving", zap.String("address", listener.Addr().String()))

	group.Go(func() error { return nodeMetrics.Serve(ctx, listener) })

	return nil
}
