package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig/generate"
	"github.com/nodepki/nodepki/pkg/role"
)

// Output file names, as talosctl writes them.
const (
	controlPlaneFile = "controlplane.yaml"
	workerFile       = "worker.yaml"
	talosconfigFile  = "talosconfig"
)

func init() {
	genCmd.AddCommand(newGenConfigCmd())
}

type genConfigOptions struct {
	withSecrets         string
	output              string
	outputTypes         []string
	patches             []string
	patchesControlPlane []string
	patchesWorker       []string
	additionalSANs      []string
	force               bool
}

func newGenConfigCmd() *cobra.Command {
	var opts genConfigOptions

	cmd := &cobra.Command{
		Use:   "config NAME ENDPOINT",
		Short: "Generate the control-plane and worker machine configs and an admin talosconfig",
		Long: `Generate controlplane.yaml, worker.yaml and talosconfig for cluster NAME whose Kubernetes API
is at ENDPOINT (an https URL, e.g. https://cp.example.com:6443).

The configs are built from the secrets bundle given with --with-secrets (see "gen secrets"). Without
it a new bundle is generated in memory and not saved: configs generated later will then belong to
another cluster, so generate and keep a bundle first.

Patches (strategic merge or RFC 6902 JSON patch; @file reads a file) are applied to both configs
(--config-patch) or to one of them, and the results validated before anything is written. The files
are written with mode 0600; existing files are only replaced with --force, and if any of them
exists without --force nothing is written. The talosconfig holds an os:admin client certificate
valid for one year and no endpoints (add them with "config endpoint"), as talosctl's.

As with talosctl, --output-types (-t) picks what to write: with several types -o is a directory;
with one type -o is a file, a directory to write it into under its usual name, or "-" for stdout.
A new talosconfig for an existing cluster, for example when its client certificate has expired:

  nodepkictl gen config NAME ENDPOINT --with-secrets secrets.yaml -t talosconfig -o ~/.talos/config --force`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runGenConfig(cmd, args[0], args[1], opts)
		},
	}

	flags := cmd.Flags()
	flags.StringVar(&opts.withSecrets, "with-secrets", "", "secrets bundle (secrets.yaml) to generate the configs from")
	flags.StringVarP(&opts.output, "output", "o", ".",
		`where to write: a directory; with a single --output-types also a file, or "-" for stdout`)
	flags.StringSliceVarP(&opts.outputTypes, "output-types", "t", []string{typeControlPlane, typeWorker, typeTalosconfig},
		"what to generate: any of controlplane, worker, talosconfig")
	flags.StringArrayVar(&opts.patches, "config-patch", nil, "patch applied to both configs (inline or @file; repeatable)")
	flags.StringArrayVar(&opts.patchesControlPlane, "config-patch-control-plane", nil, "patch applied to the control-plane config (inline or @file; repeatable)")
	flags.StringArrayVar(&opts.patchesWorker, "config-patch-worker", nil, "patch applied to the worker config (inline or @file; repeatable)")
	flags.StringSliceVar(&opts.additionalSANs, "additional-sans", nil, "extra names and addresses for the node API and Kubernetes API certificates")
	flags.BoolVarP(&opts.force, "force", "f", false, "replace existing output files")

	return cmd
}

func runGenConfig(cmd *cobra.Command, name, endpoint string, opts genConfigOptions) error {
	types, err := parseOutputTypes(opts.outputTypes)
	if err != nil {
		return err
	}

	dest, err := outputDestination(types, opts.output)
	if err != nil {
		return err
	}

	if !opts.force && !dest.stdout {
		if err := refuseExistingTargets(dest.paths); err != nil {
			return err
		}
	}

	b, err := loadOrGenerateBundle(cmd, opts.withSecrets)
	if err != nil {
		return err
	}

	contents, err := generateOutputs(name, endpoint, b, opts, types)
	if err != nil {
		return err
	}

	if dest.stdout {
		_, err = cmd.OutOrStdout().Write(contents[0])

		return err
	}

	if err := os.MkdirAll(dest.dir, 0o700); err != nil {
		return fmt.Errorf("creating output directory: %w", err)
	}

	if err := atomicfile.WriteFiles(dest.paths, contents); err != nil {
		return err
	}

	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (mode 0600)\n", dest.describe(types))

	return nil
}

// refuseExisting names every target that exists, so nothing is overwritten by accident.
func refuseExistingTargets(targets []string) error {
	var existing []string

	for _, path := range targets {
		_, err := os.Lstat(path)
		switch {
		case err == nil:
			existing = append(existing, path)
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("checking %q: %w", path, err)
		}
	}

	if len(existing) > 0 {
		return fmt.Errorf("refusing to overwrite %s: nothing was written; use --force to overwrite", strings.Join(existing, ", "))
	}

	return nil
}

func loadOrGenerateBundle(cmd *cobra.Command, path string) (*bundle.Bundle, error) {
	if path == "" {
		b, err := bundle.Generate()
		if err != nil {
			return nil, err
		}

		fmt.Fprintln(cmd.ErrOrStderr(), "warning: no --with-secrets given: generated a new secrets bundle in memory that is NOT saved; "+
			"configs generated later will not join this cluster. Run `nodepkictl gen secrets` and pass --with-secrets secrets.yaml instead.")

		return b, nil
	}

	b, err := bundle.Load(path)
	if err != nil {
		return nil, fmt.Errorf("--with-secrets: %w", err)
	}

	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("--with-secrets %s: %w", path, err)
	}

	return b, nil
}

// generateConfigs returns the encoded control-plane and worker configs, patched and validated.
func generateConfigs(name, endpoint string, b *bundle.Bundle, opts genConfigOptions) (controlPlane, worker []byte, err error) {
	common, err := machineconfig.LoadPatches(opts.patches)
	if err != nil {
		return nil, nil, fmt.Errorf("--config-patch: %w", err)
	}

	controlPlaneOnly, err := machineconfig.LoadPatches(opts.patchesControlPlane)
	if err != nil {
		return nil, nil, fmt.Errorf("--config-patch-control-plane: %w", err)
	}

	workerOnly, err := machineconfig.LoadPatches(opts.patchesWorker)
	if err != nil {
		return nil, nil, fmt.Errorf("--config-patch-worker: %w", err)
	}

	cp, w, err := generate.Generate(generate.Input{
		ClusterName:    name,
		Endpoint:       endpoint,
		Bundle:         b,
		AdditionalSANs: opts.additionalSANs,
	})
	if err != nil {
		return nil, nil, err
	}

	if controlPlane, err = patchAndEncode(cp, slices.Concat(common, controlPlaneOnly)); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", controlPlaneFile, err)
	}

	if worker, err = patchAndEncode(w, slices.Concat(common, workerOnly)); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", workerFile, err)
	}

	return controlPlane, worker, nil
}

func patchAndEncode(cfg *machineconfig.Config, patches []machineconfig.Patch) ([]byte, error) {
	patched, err := machineconfig.Apply(cfg, patches...)
	if err != nil {
		return nil, err
	}

	if err := patched.Validate(); err != nil {
		return nil, fmt.Errorf("the patched config is invalid: %w", err)
	}

	return patched.Bytes()
}

// adminTalosconfig is talosctl's: context NAME, no endpoints, the OS CA and an os:admin client
// certificate valid for a year.
func adminTalosconfig(name string, b *bundle.Bundle) ([]byte, error) {
	crt, key, err := b.NewClientCertificate([]string{role.Admin}, certs.ClientLifetime)
	if err != nil {
		return nil, fmt.Errorf("issuing the admin client certificate: %w", err)
	}

	return clientconfig.New(name, []string{}, b.Certs.OS.Crt, crt, key).Bytes()
}
