package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v4"

	"github.com/nodepki/nodepki/pkg/clientconfig"
)

func init() {
	rootCmd.PersistentFlags().String("talosconfig", "",
		"client config file (default: $TALOSCONFIG if set, else ~/.talos/config)")
	rootCmd.AddCommand(newConfigCmd())
}

// talosconfigPath resolves the client config file: the --talosconfig flag, then
// clientconfig.DefaultPath(). It returns "" only when neither gives a path (no home directory).
func talosconfigPath(cmd *cobra.Command) string {
	if flag := cmd.Flag("talosconfig"); flag != nil && flag.Value.String() != "" {
		return flag.Value.String()
	}

	path, err := clientconfig.DefaultPath()
	if err != nil {
		return ""
	}

	return path
}

// openTalosconfig loads the client config; with allowMissing a missing file yields an empty config.
func openTalosconfig(cmd *cobra.Command, allowMissing bool) (*clientconfig.Config, string, error) {
	path := talosconfigPath(cmd)
	if path == "" {
		return nil, "", fmt.Errorf("cannot locate the client config: pass --talosconfig or set $%s", clientconfig.EnvVar)
	}

	cfg, err := clientconfig.Open(path)

	switch {
	case errors.Is(err, fs.ErrNotExist) && allowMissing:
		return &clientconfig.Config{Contexts: map[string]*clientconfig.Context{}}, path, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, path, fmt.Errorf("client config %s does not exist: `nodepkictl gen config` writes one (./talosconfig) "+
			"and `nodepkictl cluster create` writes one for a local cluster; pass it with --talosconfig or $%s",
			path, clientconfig.EnvVar)
	case err != nil:
		return nil, path, err
	}

	return cfg, path, nil
}

// openContext loads the client config and the context the command uses (--context or the current one).
func openContext(cmd *cobra.Command) (path, contextName string, cctx *clientconfig.Context, err error) {
	cfg, path, err := openTalosconfig(cmd, false)
	if err != nil {
		return path, "", nil, err
	}

	contextName, cctx, err = selectedContext(cmd, cfg)
	if err != nil {
		return path, "", nil, fmt.Errorf("%s: %w", path, err)
	}

	return path, contextName, cctx, nil
}

// selectedContext is the context named by the global --context flag, if the root defines it and
// it is set, else the current one.
func selectedContext(cmd *cobra.Command, cfg *clientconfig.Config) (string, *clientconfig.Context, error) {
	name := cfg.Context
	if flag := cmd.Flag("context"); flag != nil && flag.Value.String() != "" {
		name = flag.Value.String()
	}

	if name == "" {
		ctx, err := cfg.Current()

		return "", ctx, err
	}

	ctx, err := cfg.Lookup(name)

	return name, ctx, err
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage the client config (talosconfig): contexts, endpoints, nodes",
		Long: `Manage the client config (talosconfig format). The file is --talosconfig if given, else
$TALOSCONFIG if set, else ~/.talos/config. It is rewritten atomically with mode 0600.`,
	}

	cmd.AddCommand(
		newConfigInfoCmd(),
		newConfigMergeCmd(),
		newConfigRemoveCmd(),
		newConfigContextCmd(),
		newConfigEndpointCmd(),
		newConfigNodeCmd(),
		newConfigContextsCmd(),
		newConfigNewCmd(),
		newConfigRenewCmd(),
	)

	return cmd
}

func newConfigInfoCmd() *cobra.Command {
	var output string

	cmd := &cobra.Command{
		Use:   "info",
		Short: "Show the current (or --context) context: endpoints, nodes, roles and client certificate expiry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := openTalosconfig(cmd, false)
			if err != nil {
				return err
			}

			name, _, err := selectedContext(cmd, cfg)
			if err != nil {
				return err
			}

			view := *cfg
			view.Context = name

			info, err := view.Info()
			if err != nil {
				return err
			}

			return renderInfo(cmd.OutOrStdout(), info, output)
		},
	}

	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text, json or yaml")

	return cmd
}

func renderInfo(w io.Writer, info *clientconfig.Info, format string) error {
	switch format {
	case "text":
		expires := "no client certificate"
		if !info.CertNotAfter.IsZero() {
			expires = fmt.Sprintf("%s (%s)", info.CertNotAfter.Format("2006-01-02"), info.CertTTL)
		}

		tw := tabwriter.NewWriter(w, 0, 0, 1, ' ', 0)
		fmt.Fprintf(tw, "Current context:\t%s\n", info.Context)
		fmt.Fprintf(tw, "Endpoints:\t%s\n", listOrNotDefined(info.Endpoints))
		fmt.Fprintf(tw, "Nodes:\t%s\n", listOrNotDefined(info.Nodes))
		fmt.Fprintf(tw, "Roles:\t%s\n", listOrNotDefined(info.Roles))
		fmt.Fprintf(tw, "Certificate expires:\t%s\n", expires)

		return tw.Flush()
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "    ")

		return enc.Encode(info)
	case "yaml":
		out, err := yaml.Dump(info, yaml.V3)
		if err != nil {
			return fmt.Errorf("encoding info: %w", err)
		}

		_, err = w.Write(out)

		return err
	default:
		return fmt.Errorf("unknown output format %q: want text, json or yaml", format)
	}
}

func listOrNotDefined(items []string) string {
	if len(items) == 0 {
		return "not defined"
	}

	return strings.Join(items, ", ")
}

func newConfigMergeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "merge FILE",
		Short: "Merge the contexts of another client config into this one",
		Long: `Merge the contexts of FILE into the client config (created if missing). A context whose
name is taken is added as NAME-1, NAME-2, ...; FILE's current context becomes the current one.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			other, err := clientconfig.Open(args[0])
			if err != nil {
				return err
			}

			cfg, path, err := openTalosconfig(cmd, true)
			if err != nil {
				return err
			}

			renames := cfg.Merge(other)

			if err = cfg.Save(path); err != nil {
				return err
			}

			for _, r := range renames {
				fmt.Fprintf(cmd.ErrOrStderr(), "renamed context %s: the name was taken\n", r)
			}

			fmt.Fprintf(cmd.ErrOrStderr(), "merged %d context(s) into %s; current context is %q\n",
				len(other.Contexts), path, cfg.Context)

			return nil
		},
	}
}

func newConfigContextCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "context NAME",
		Short: "Make NAME the current context",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := openTalosconfig(cmd, false)
			if err != nil {
				return err
			}

			if _, err = cfg.Lookup(args[0]); err != nil {
				return err
			}

			cfg.Context = args[0]

			return cfg.Save(path)
		},
	}
}

func newConfigEndpointCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "endpoint ENDPOINT...",
		Aliases: []string{"endpoints"},
		Short:   "Set the endpoints (addresses the client connects to) of the current (or --context) context",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return updateCurrentContext(cmd, "endpoint", args, func(ctx *clientconfig.Context) {
				ctx.Endpoints = args
			})
		},
	}
}

func newConfigNodeCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "node [NODE...]",
		Aliases: []string{"nodes"},
		Short:   "Set the default target nodes of the current (or --context) context; none clears them",
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return updateCurrentContext(cmd, "node", args, func(ctx *clientconfig.Context) {
				ctx.Nodes = args
			})
		},
	}
}

func updateCurrentContext(cmd *cobra.Command, what string, values []string, update func(*clientconfig.Context)) error {
	for _, v := range values {
		if v == "" || strings.ContainsAny(v, " \t\n,") {
			return fmt.Errorf("invalid %s %q: give each address as a separate argument, without spaces or commas", what, v)
		}
	}

	cfg, path, err := openTalosconfig(cmd, false)
	if err != nil {
		return err
	}

	_, ctx, err := selectedContext(cmd, cfg)
	if err != nil {
		return err
	}

	update(ctx)

	return cfg.Save(path)
}

func newConfigContextsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "contexts",
		Short: "List the contexts; the current one is marked with *",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := openTalosconfig(cmd, false)
			if err != nil {
				return err
			}

			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "CURRENT\tNAME\tENDPOINTS\tNODES")

			for _, name := range cfg.ContextNames() {
				ctx := cfg.Contexts[name]

				current := ""
				if name == cfg.Context {
					current = "*"
				}

				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", current, name, strings.Join(ctx.Endpoints, ","), strings.Join(ctx.Nodes, ","))
			}

			return tw.Flush()
		},
	}
}
