// Command nodepkictl is the operator CLI of nodepki: it generates secrets and configs, reads and
// patches node resources over the node API, runs local clusters and rotates CAs.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// rootCmd is the top of the command tree; each subcommand file adds itself in init().
var rootCmd = &cobra.Command{
	Use:           "nodepkictl",
	Short:         "Operate the nodepki certificate subsystem of a node OS cluster",
	SilenceUsage:  true,
	SilenceErrors: true,
}

// genCmd groups the generators (secrets bundle, machine configs).
var genCmd = &cobra.Command{
	Use:   "gen",
	Short: "Generate secrets bundles and machine configs",
}

func init() {
	rootCmd.AddCommand(genCmd)
}

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(exitCode(err))
	}
}
