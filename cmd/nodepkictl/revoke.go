package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/nodepki/nodepki/pkg/clientconfig"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/pkg/revoke"
	"github.com/nodepki/nodepki/pkg/rotate"
)

func init() {
	rootCmd.AddCommand(newRevokeCmd())
}

type revokeInput struct {
	talosconfigFile, certFile, fingerprint, serial, issuer, reason string
	force, prune                                                   bool
}

func newRevokeCmd() *cobra.Command {
	var in revokeInput

	cmd := &cobra.Command{
		Use:   "revoke (--talosconfig-file FILE | --cert FILE | --fingerprint HEX | --serial HEX --issuer FINGERPRINT) [--reason TEXT] [--force] [--prune]",
		Short: "Revoke one client credential on every node, without rotating the CA",
		Long: `Add an entry to machine.revokedCertificates on every node of the cluster: from then on every
node refuses the credential on every call, saying it was revoked, and ends its open streams (watches).
A call forwarded by a control plane is refused by the node it enters, which is why every node holds
the list.

What to revoke, one of:
  --talosconfig-file FILE   the client certificate of that talosconfig's current context
  --cert FILE               a PEM client certificate
  --fingerprint HEX         the SHA-256 SPKI fingerprint of a key: every certificate with it is
                            refused, renewals with the same key too
  --serial HEX --issuer FP  one certificate, by its serial as 'openssl x509 -noout -serial' prints
                            it and the fingerprint of the OS CA that issued it
A certificate (first two forms) is denied by its key's fingerprint and by its serial; the entry
records its notAfter, after which 'revoke --prune' drops it.

The nodes are --nodes when given, else discovered through the endpoints as rotate-ca does. Each
node's config is changed only if the entry is missing, then the node is checked to enforce it (and,
with --talosconfig-file, to refuse the revoked credential on a new connection). Nodes that fail are
reported; rerun the same command. The list is printed as a patch for
'nodepkictl gen config --config-patch', so that nodes made later carry it too.

Revoking the credential this command connects with is refused unless --force.
'nodepkictl get revocations' lists the entries a node enforces.`,
		Example: `  nodepkictl revoke --talosconfig-file ./leaked-talosconfig --reason "laptop stolen"
  nodepkictl revoke --serial 3B7900A1C0DC264B --issuer 6018...1364
  nodepkictl revoke --prune`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRevoke(cmd, in)
		},
	}

	flags := cmd.Flags()
	flags.StringVar(&in.talosconfigFile, "talosconfig-file", "", "revoke the client certificate of this talosconfig's current context")
	flags.StringVar(&in.certFile, "cert", "", "revoke this PEM client certificate")
	flags.StringVar(&in.fingerprint, "fingerprint", "", "revoke every certificate of the key with this SHA-256 SPKI fingerprint (hex)")
	flags.StringVar(&in.serial, "serial", "", "revoke the certificate with this serial (hex, as openssl prints it); needs --issuer")
	flags.StringVar(&in.issuer, "issuer", "", "fingerprint of the OS CA that issued --serial (nodepkictl get acceptedcas os)")
	flags.StringVar(&in.reason, "reason", "", "why, recorded in the entry and shown to the refused client")
	flags.BoolVar(&in.force, "force", false, "allow revoking the credential this command connects with")
	flags.BoolVar(&in.prune, "prune", false, "drop entries whose notAfter has passed")

	return cmd
}

// target turns the flags into what to revoke; nil with --prune alone.
func (in revokeInput) target() (*revoke.Target, error) {
	given := 0

	for _, v := range []string{in.talosconfigFile, in.certFile, in.fingerprint, in.serial} {
		if v != "" {
			given++
		}
	}

	switch {
	case given == 0 && in.issuer != "":
		return nil, errors.New("--issuer: only meaningful with --serial")
	case given == 0 && in.prune:
		return nil, nil
	case given == 0:
		return nil, errors.New("nothing to revoke: pass one of --talosconfig-file, --cert, --fingerprint, --serial with --issuer (or --prune)")
	case given > 1:
		return nil, errors.New("pass only one of --talosconfig-file, --cert, --fingerprint, --serial")
	case in.issuer != "" && in.serial == "":
		return nil, errors.New("--issuer: only meaningful with --serial")
	}

	t := &revoke.Target{Entry: revocation.Entry{Reason: in.reason}}

	switch {
	case in.talosconfigFile != "":
		cfg, err := clientconfig.Open(in.talosconfigFile)
		if err != nil {
			return nil, fmt.Errorf("--talosconfig-file: %w", err)
		}

		cctx, err := cfg.Current()
		if err != nil {
			return nil, fmt.Errorf("--talosconfig-file %s: %w", in.talosconfigFile, err)
		}

		creds, err := rotate.CredentialsFromContext("revoked", cctx)
		if err != nil {
			return nil, fmt.Errorf("--talosconfig-file %s: %w", in.talosconfigFile, err)
		}

		t.Certificate, t.Credentials = creds.Crt, &creds
	case in.certFile != "":
		data, err := os.ReadFile(in.certFile)
		if err != nil {
			return nil, fmt.Errorf("--cert: %w", err)
		}

		t.Certificate = data
	case in.fingerprint != "":
		if err := revocation.CheckFingerprint(in.fingerprint); err != nil {
			return nil, fmt.Errorf("--fingerprint: %w", err)
		}

		t.Entry.Fingerprint = revocation.NormalizeFingerprint(in.fingerprint)
	default:
		if in.issuer == "" {
			return nil, errors.New("--serial: a serial is scoped to its issuer: add --issuer with the OS CA's fingerprint (nodepkictl get acceptedcas os)")
		}

		serial, err := revocation.ParseSerial(in.serial)
		if err != nil {
			return nil, fmt.Errorf("--serial: %w", err)
		}

		if err = revocation.CheckFingerprint(in.issuer); err != nil {
			return nil, fmt.Errorf("--issuer: %w", err)
		}

		t.Entry.Serial, t.Entry.Issuer = revocation.FormatSerial(serial), revocation.NormalizeFingerprint(in.issuer)
	}

	return t, nil
}

func runRevoke(cmd *cobra.Command, in revokeInput) error {
	t, err := in.target()
	if err != nil {
		return err
	}

	path, contextName, cctx, err := openContext(cmd)
	if err != nil {
		return err
	}

	own, err := rotate.CredentialsFromContext("current", cctx)
	if err != nil {
		return fmt.Errorf("context %q in %s: %w", contextName, path, err)
	}

	overrides := readClientOverrides(cmd)

	endpoints := cctx.Endpoints
	if len(overrides.endpoints) > 0 {
		endpoints = overrides.endpoints
	}

	if len(endpoints) == 0 {
		return fmt.Errorf("context %q in %s has no endpoints: pass --endpoints or set them with `nodepkictl config endpoint HOST...`", contextName, path)
	}

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	api := rotate.NewNodeAPI(rotate.NodeAPIOptions{Endpoints: endpoints})
	defer api.Close()

	if err = revoke.Run(ctx, api, revoke.Options{
		Target:        t,
		Own:           own,
		Endpoints:     endpoints,
		Nodes:         trimAll(overrides.nodes),
		FallbackNodes: trimAll(cctx.Nodes),
		Force:         in.force,
		Prune:         in.prune,
		Out:           cmd.OutOrStdout(),
	}); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}

	return nil
}
