package main

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	nodeapi "github.com/nodepki/nodepki/api/node"
)

func init() {
	rootCmd.AddCommand(newApplyConfigCmd())
}

func newApplyConfigCmd() *cobra.Command {
	var (
		file   string
		dryRun bool
	)

	cmd := &cobra.Command{
		Use:     "apply-config -f FILE",
		Aliases: []string{"apply"},
		Short:   "Replace the machine config of nodes with a whole config file",
		Long: `Send a whole machine config document to each node. The node validates it first and refuses it
as a whole if it is invalid (nothing changes); a valid config is committed atomically and the
controllers re-derive every CA pool and certificate from it.

With --dry-run each node validates the config and prints what would change (secrets appear as
******) without applying anything. Nodes are handled one by one; a node that refuses the config
does not stop the others, and the exit status is non-zero if any node failed.

To change a few fields rather than the whole document, use "nodepkictl patch machineconfig".`,
		Example: `  # preview, then apply, a new config on one node
  nodepkictl -n 10.5.0.2 apply-config -f controlplane.yaml --dry-run
  nodepkictl -n 10.5.0.2 apply-config -f controlplane.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("--file is required: the machine config document to apply")
			}

			data, err := readFileArg("file", file)
			if err != nil {
				return err
			}

			if len(bytes.TrimSpace(data)) == 0 {
				return fmt.Errorf("--file %s is empty: want a machine config document", file)
			}

			return applyConfiguration(cmd, &nodeapi.ApplyConfigurationRequest{Data: data, DryRun: dryRun})
		},
	}

	cmd.Flags().StringVarP(&file, "file", "f", "", "machine config file to apply (required)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and print the changes without applying them")

	return cmd
}

// applyConfiguration sends req to every target and prints each node's outcome.
func applyConfiguration(cmd *cobra.Command, req *nodeapi.ApplyConfigurationRequest) error {
	ctx := cmd.Context()

	s, err := connect(ctx, cmd)
	if err != nil {
		return err
	}

	defer s.Close()

	out := cmd.OutOrStdout()

	return s.forEachTarget(ctx, func(ctx context.Context, t target) error {
		resp, err := s.client.Node().ApplyConfiguration(ctx, req)
		if err != nil {
			return err
		}

		printApplyResult(out, t.label, req.GetDryRun(), resp)

		return nil
	})
}

func printApplyResult(w io.Writer, node string, dryRun bool, resp *nodeapi.ApplyConfigurationResponse) {
	switch {
	case dryRun && !resp.GetChanged():
		fmt.Fprintf(w, "- %s: dry run: no changes\n", node)
	case dryRun:
		fmt.Fprintf(w, "- %s: dry run: the config would change:\n", node)

		diff := resp.GetDiff()
		fmt.Fprint(w, diff)

		if diff != "" && diff[len(diff)-1] != '\n' {
			fmt.Fprintln(w)
		}
	case !resp.GetChanged():
		fmt.Fprintf(w, "- %s: applied (no changes)\n", node)
	default:
		fmt.Fprintf(w, "- %s: applied\n", node)
	}
}
