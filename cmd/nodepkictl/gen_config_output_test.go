package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/machineconfig"
	"github.com/nodepki/nodepki/pkg/role"
)

func TestGenConfigOutputTypes(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name string
		// output is -o, relative to a fresh directory ("" means the directory itself).
		output    string
		types     string
		wantFiles []string
		wantLine  string
	}{
		{"one type into a directory", "", "talosconfig", []string{talosconfigFile}, "wrote talosconfig to "},
		{"one type into a file", "creds/admin.yaml", "talosconfig", []string{"creds/admin.yaml"}, "wrote talosconfig to "},
		{"one type into a new directory", "new/", "worker", []string{"new/" + workerFile}, "wrote worker.yaml to "},
		{"two types", "configs", "worker,controlplane", []string{"configs/" + controlPlaneFile, "configs/" + workerFile}, "wrote controlplane.yaml and worker.yaml to "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			dir := t.TempDir()
			_, secretsPath := writeSecrets(t, t.TempDir())

			_, stderr, err := runGenConfigCLI(t, "demo", genConfigEndpoint, "--with-secrets", secretsPath,
				"-t", tc.types, "-o", dir+string(filepath.Separator)+tc.output)
			require.NoError(t, err)
			assert.Contains(t, stderr, tc.wantLine)

			var written []string

			require.NoError(t, filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(dir, path)
					written = append(written, filepath.ToSlash(rel))
				}

				return err
			}))

			assert.ElementsMatch(t, tc.wantFiles, written)

			for _, name := range written {
				info, err := os.Stat(filepath.Join(dir, name))
				require.NoError(t, err)
				assert.Equal(t, os.FileMode(0o600), info.Mode().Perm(), name)
			}
		})
	}
}

func TestGenConfigToStdout(t *testing.T) {
	t.Parallel()

	b, secretsPath := writeSecrets(t, t.TempDir())

	t.Run("talosconfig", func(t *testing.T) {
		t.Parallel()

		stdout, _, err := runGenConfigCLI(t, "demo", genConfigEndpoint, "--with-secrets", secretsPath, "-t", "talosconfig", "-o", "-")
		require.NoError(t, err)

		cfg, err := clientconfig.Parse([]byte(stdout))
		require.NoError(t, err)

		cctx, err := cfg.Current()
		require.NoError(t, err)

		crtPEM, err := cctx.CrtPEM()
		require.NoError(t, err)

		crt, err := certs.ParseCertificate(crtPEM)
		require.NoError(t, err)
		assert.Equal(t, []string{role.Admin}, crt.Subject.Organization)

		osCA, err := certs.ParseCertificate(b.Certs.OS.Crt)
		require.NoError(t, err)
		require.NoError(t, crt.CheckSignatureFrom(osCA), "signed by the bundle's OS CA")
	})

	t.Run("controlplane", func(t *testing.T) {
		t.Parallel()

		stdout, _, err := runGenConfigCLI(t, "demo", genConfigEndpoint, "--with-secrets", secretsPath, "-t", "controlplane", "-o", "-")
		require.NoError(t, err)

		cfg, err := machineconfig.Parse([]byte(stdout))
		require.NoError(t, err)
		require.NoError(t, cfg.Validate())
		assert.Equal(t, machineconfig.TypeControlPlane, cfg.Document().Machine.Type)
	})
}

func TestGenConfigOutputTypesRefused(t *testing.T) {
	t.Parallel()

	_, secretsPath := writeSecrets(t, t.TempDir())

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown type", []string{"-t", "kubeconfig"}, `unknown type "kubeconfig": want any of controlplane, worker, talosconfig`},
		{"empty type list", []string{"-t", ""}, "--output-types is empty"},
		{"stdout with several types", []string{"-t", "worker,talosconfig", "-o", "-"}, "exactly one output type, not 2"},
		{"stdout with the default types", []string{"-o", "-"}, "exactly one output type, not 3"},
		{"several types into a file", []string{"-t", "worker,talosconfig", "-o", "@file"}, "is a file: with several output types -o must be a directory"},
		{"existing file without --force", []string{"-t", "talosconfig", "-o", "@file"}, "refusing to overwrite"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			dir := t.TempDir()
			file := filepath.Join(dir, "existing")
			require.NoError(t, os.WriteFile(file, []byte("keep me\n"), 0o600))

			args := []string{"demo", genConfigEndpoint, "--with-secrets", secretsPath}
			for _, a := range tc.args {
				if a == "@file" {
					a = file
				}

				args = append(args, a)
			}

			stdout, _, err := runGenConfigCLI(t, args...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.Empty(t, stdout)

			before := map[string]string{"existing": "keep me\n"}
			assert.Equal(t, before, snapshot(t, dir), "a refused run changed the directory")
		})
	}
}
