package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

func newConfigRemoveCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "remove CONTEXT...",
		Short: "Remove contexts from the client config",
		Long: `Remove the named contexts from the client config. Every name must exist, or nothing is removed.
Removing the current context leaves no current context: merge or choose one next
(nodepkictl config merge FILE, nodepkictl config context NAME).

To replace a context by a new one of the same name (new credentials after a CA rotation by hand,
say), remove it, then merge the file that holds the new one.`,
		Example: `  nodepkictl config remove demo
  nodepkictl config merge final-talosconfig`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := openTalosconfig(cmd, false)
			if err != nil {
				return err
			}

			for _, name := range args {
				if _, err = cfg.Lookup(name); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
			}

			for _, name := range args {
				delete(cfg.Contexts, name)

				if cfg.Context == name {
					cfg.Context = ""
				}
			}

			if err = cfg.Save(path); err != nil {
				return err
			}

			current := fmt.Sprintf("current context is %q", cfg.Context)
			if cfg.Context == "" {
				current = "no current context: choose one with `nodepkictl config context NAME` or merge one"
			}

			fmt.Fprintf(cmd.ErrOrStderr(), "removed context(s) %s from %s; %s\n", strings.Join(args, ", "), path, current)

			return nil
		},
	}
}
