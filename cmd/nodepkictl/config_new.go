package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/role"
)

func newConfigNewCmd() *cobra.Command {
	var (
		roles  []string
		crtTTL time.Duration
	)

	cmd := &cobra.Command{
		Use:   "new [PATH]",
		Short: "Have a control-plane node issue a new client config with the given roles",
		Long: `Ask a control-plane node to sign a new client certificate with the OS CA and write a client
config (talosconfig) holding it to PATH (default ./talosconfig), with the endpoints of the current
context (or --endpoints). The node must be a single control-plane node and the caller needs the
os:admin role. PATH must not exist yet: config new never overwrites a file.

Roles (the certificate's Organization):
  os:admin        everything, including sensitive resources and config changes
  os:operator     reading non-sensitive resources and operational calls
  os:reader       reading non-sensitive resources
  os:etcd:backup  etcd snapshots only

Use "nodepkictl config merge PATH" to add the new context to your client config.`,
		Example: `  # a read-only config for a monitoring system, valid 30 days
  nodepkictl -n 10.5.0.2 config new reader-talosconfig --roles os:reader --crt-ttl 720h

  # a second admin config
  nodepkictl -n 10.5.0.2 config new admin-talosconfig`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "talosconfig"
			if len(args) == 1 {
				path = args[0]
			}

			// The default is applied here rather than as the flag's default, so that an explicit
			// empty --roles is refused instead of silently becoming os:admin.
			if !cmd.Flags().Changed("roles") {
				roles = []string{role.Admin}
			}

			return runConfigNew(cmd, path, roles, crtTTL)
		},
	}

	cmd.Flags().StringSliceVar(&roles, "roles", nil,
		"roles of the new client certificate, comma-separated: "+strings.Join(role.All, ", ")+" (default "+role.Admin+")")
	cmd.Flags().DurationVar(&crtTTL, "crt-ttl", certs.ClientLifetime, "lifetime of the new client certificate")

	return cmd
}

func runConfigNew(cmd *cobra.Command, path string, roles []string, crtTTL time.Duration) error {
	if _, err := role.Check(roles); err != nil {
		return fmt.Errorf("--roles: %w", err)
	}

	if crtTTL <= 0 {
		return fmt.Errorf("--crt-ttl must be positive, got %s", crtTTL)
	}

	if err := refuseExisting(path); err != nil {
		return err
	}

	ctx := cmd.Context()

	s, err := connect(ctx, cmd)
	if err != nil {
		return err
	}

	defer s.Close()

	t, err := s.onlyTarget("config new")
	if err != nil {
		return err
	}

	resp, err := s.client.Node().GenerateClientConfiguration(client.WithNode(ctx, t.node), &nodeapi.GenerateClientConfigurationRequest{
		Roles:         roles,
		CrtTtlSeconds: int64(crtTTL / time.Second),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", t.label, err)
	}

	cfg, err := clientconfig.Parse(resp.GetTalosconfig())
	if err != nil {
		return fmt.Errorf("%s: the node returned an unusable client config: %w", t.label, err)
	}

	if len(cfg.Contexts) == 0 {
		return fmt.Errorf("%s: the node returned a client config without contexts", t.label)
	}

	for _, c := range cfg.Contexts {
		c.Endpoints = slices.Clone(s.endpoints)
	}

	// Checked again: the call may have taken a while.
	if err = refuseExisting(path); err != nil {
		return err
	}

	if err = cfg.Save(path); err != nil {
		return err
	}

	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: context %q, roles %s, endpoints %s\n",
		path, cfg.Context, strings.Join(roles, ","), strings.Join(s.endpoints, ","))

	return nil
}

func refuseExisting(path string) error {
	_, err := os.Lstat(path)

	switch {
	case err == nil:
		return fmt.Errorf("%s already exists: config new never overwrites a file; choose another PATH or remove it", path)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	default:
		return fmt.Errorf("checking %s: %w", path, err)
	}
}
