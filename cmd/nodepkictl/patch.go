package main

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	nodeapi "github.com/nodepki/nodepki/api/node"
)

func init() {
	rootCmd.AddCommand(newPatchCmd())
}

func newPatchCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "patch",
		Short: "Patch node resources (the machine config)",
		Args:  cobra.NoArgs,
	}

	cmd.AddCommand(newPatchMachineConfigCmd())

	return cmd
}

func newPatchMachineConfigCmd() *cobra.Command {
	var (
		patches []string
		dryRun  bool
	)

	cmd := &cobra.Command{
		Use:     "machineconfig --patch PATCH [--patch PATCH...]",
		Aliases: []string{"mc", "machineconfigs"},
		Short:   "Change fields of the machine config of nodes with patches",
		Long: `Apply patches to the current machine config of each node. A patch is a strategic merge patch
(a partial machine config document, in YAML or JSON) or an RFC 6902 JSON patch (a list of
operations). Give a patch inline or as @FILE; repeat --patch to apply several in order.

The node applies the patches to its current config and validates the result; an invalid result is
refused as a whole and nothing changes. With --dry-run each node prints the change the patches
would make (secrets appear as ******) without applying it. Nodes are handled one by one; a node
that refuses does not stop the others, and the exit status is non-zero if any node failed.`,
		Example: `  # add a SAN to the node API certificate of every node in the context
  nodepkictl patch machineconfig --patch '{"machine": {"certSANs": ["api.example.com"]}}'

  # accept an extra CA, from a file, previewing first
  nodepkictl -n 10.5.0.2 patch mc --patch @accept-new-ca.yaml --dry-run

  # RFC 6902 JSON patch
  nodepkictl patch mc --patch '[{"op": "add", "path": "/machine/certSANs/-", "value": "10.5.0.100"}]'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			loaded, err := loadPatches(patches)
			if err != nil {
				return err
			}

			return applyConfiguration(cmd, &nodeapi.ApplyConfigurationRequest{Patches: loaded, DryRun: dryRun})
		},
	}

	cmd.Flags().StringArrayVarP(&patches, "patch", "p", nil, "patch to apply, inline or @FILE (repeatable, applied in order)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and print the changes without applying them")

	return cmd
}

// loadPatches reads @FILE arguments and refuses empty patches before anything is sent.
func loadPatches(args []string) ([][]byte, error) {
	if len(args) == 0 {
		return nil, errors.New("--patch is required: give a patch inline or as @FILE")
	}

	out := make([][]byte, 0, len(args))

	for i, arg := range args {
		patch := []byte(arg)

		if name, ok := strings.CutPrefix(arg, "@"); ok {
			data, err := readFileArg("patch", name)
			if err != nil {
				return nil, err
			}

			patch = data
		}

		if len(bytes.TrimSpace(patch)) == 0 {
			return nil, fmt.Errorf("--patch #%d (%q) is empty: want a strategic merge or JSON patch", i+1, arg)
		}

		out = append(out, patch)
	}

	return out, nil
}
