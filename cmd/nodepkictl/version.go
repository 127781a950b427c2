package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/version"
)

func init() {
	rootCmd.AddCommand(newVersionCmd())
}

func newVersionCmd() *cobra.Command {
	var clientOnly bool

	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client version and the version each node runs",
		Long: `Print the version of nodepkictl, then ask each node (--nodes, or the context's nodes) for the
version of the nodepkid it runs and its machine type. With --client nothing is dialled.`,
		Example: `  nodepkictl version --client
  nodepkictl -n 10.5.0.2,10.5.0.3 version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()

			fmt.Fprintf(out, "Client:\n\tVersion: %s\n", version.Version)

			if clientOnly {
				return nil
			}

			ctx := cmd.Context()

			s, err := connect(ctx, cmd)
			if err != nil {
				return err
			}

			defer s.Close()

			return s.forEachTarget(ctx, func(ctx context.Context, t target) error {
				resp, err := s.client.Node().Version(ctx, &nodeapi.VersionRequest{})
				if err != nil {
					return err
				}

				fmt.Fprintf(out, "Server:\n\tNODE: %s\n\tVersion: %s\n\tMachine type: %s\n",
					t.label, resp.GetVersion(), resp.GetMachineType())

				// The node names itself; a mismatch means the call reached another node than asked.
				if resp.GetNode() != "" && resp.GetNode() != t.label {
					fmt.Fprintf(out, "\tAnswered by: %s\n", resp.GetNode())
				}

				return nil
			})
		},
	}

	cmd.Flags().BoolVar(&clientOnly, "client", false, "print the client version only")

	return cmd
}
