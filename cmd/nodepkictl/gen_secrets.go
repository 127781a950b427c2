package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

func init() {
	genCmd.AddCommand(newGenSecretsCmd())
}

type genSecretsOptions struct {
	output         string
	kubernetesPKI  string
	bootstrapToken string
	force          bool
}

func newGenSecretsCmd() *cobra.Command {
	var opts genSecretsOptions

	cmd := &cobra.Command{
		Use:   "secrets",
		Short: "Generate a secrets bundle (secrets.yaml): every root CA, key, token and cluster secret",
		Long: `Generate a secrets bundle (secrets.yaml) in Talos's format: the OS, Kubernetes, etcd and
aggregator CAs, the service-account key, the bootstrap and trustd tokens, the cluster identity and
the encryption secret. Keep it safe: every machine config and client config is derived from it.

With --from-kubernetes-pki the Kubernetes roots of a kubeadm cluster are kept (ca.crt/ca.key,
etcd/ca.crt/etcd/ca.key, front-proxy-ca.crt/front-proxy-ca.key, sa.key) and the rest generated.

The file is written atomically with mode 0600; an existing file is only replaced with --force.
Use -o - to write the bundle to standard output.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runGenSecrets(cmd, opts)
		},
	}

	flags := cmd.Flags()
	flags.StringVarP(&opts.output, "output-file", "o", "secrets.yaml", `where to write the bundle ("-" for standard output)`)
	flags.StringVarP(&opts.kubernetesPKI, "from-kubernetes-pki", "p", "",
		"kubeadm PKI directory (e.g. /etc/kubernetes/pki) whose Kubernetes roots the bundle keeps")
	flags.StringVarP(&opts.bootstrapToken, "kubernetes-bootstrap-token", "t", "",
		"bootstrap token to keep with --from-kubernetes-pki (format [a-z0-9]{6}.[a-z0-9]{16}); generated if empty")
	flags.BoolVarP(&opts.force, "force", "f", false, "replace an existing output file")

	return cmd
}

func runGenSecrets(cmd *cobra.Command, opts genSecretsOptions) error {
	if opts.bootstrapToken != "" && opts.kubernetesPKI == "" {
		return errors.New("--kubernetes-bootstrap-token is only used with --from-kubernetes-pki")
	}

	var (
		b   *bundle.Bundle
		err error
	)

	if opts.kubernetesPKI != "" {
		b, err = bundle.FromKubernetesPKI(opts.kubernetesPKI, opts.bootstrapToken)
	} else {
		b, err = bundle.Generate()
	}

	if err != nil {
		return err
	}

	stderr := cmd.ErrOrStderr()

	if opts.output == "-" {
		data, err := b.Marshal()
		if err != nil {
			return err
		}

		if _, err = cmd.OutOrStdout().Write(data); err != nil {
			return fmt.Errorf("writing the bundle to standard output: %w", err)
		}

		fmt.Fprintln(stderr, "wrote the secrets bundle to standard output")
	} else {
		if err = b.WriteFile(opts.output, opts.force); err != nil {
			return err
		}

		fmt.Fprintf(stderr, "wrote the secrets bundle to %s (mode 0600)\n", opts.output)
	}

	describeRoots(stderr, b, opts.kubernetesPKI)

	return nil
}

// describeRoots prints where each root came from and its SPKI fingerprint, so an operator can
// match the bundle against what nodes report without ever printing key material.
func describeRoots(out io.Writer, b *bundle.Bundle, kubernetesPKI string) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	defer w.Flush()

	from := func(file string) string {
		if kubernetesPKI == "" {
			return "generated"
		}

		return "from " + filepath.Join(kubernetesPKI, file)
	}

	for _, root := range []struct {
		name   string
		pair   *machineconfig.CertificateAndKey
		source string
	}{
		{"os CA", b.Certs.OS, "generated"},
		{"kubernetes CA", b.Certs.K8s, from("ca.crt")},
		{"etcd CA", b.Certs.Etcd, from(filepath.Join("etcd", "ca.crt"))},
		{"aggregator CA", b.Certs.K8sAggregator, from("front-proxy-ca.crt")},
	} {
		crt, err := certs.ParseCertificate(root.pair.Crt)
		if err != nil {
			continue
		}

		fmt.Fprintf(w, "  %s:\t%s\tSPKI sha256 %s\texpires %s\n",
			root.name, root.source, certs.Fingerprint(crt), crt.NotAfter.UTC().Format("2006-01-02"))
	}

	pub, err := certs.ParsePublicKey(b.Certs.K8sServiceAccount.Key)
	if err != nil {
		return
	}

	if fp, err := certs.PublicKeyFingerprint(pub); err == nil {
		fmt.Fprintf(w, "  service-account key:\t%s\tSPKI sha256 %s\t\n", from("sa.key"), fp)
	}
}
