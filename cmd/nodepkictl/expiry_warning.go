package main

import (
	"crypto/x509"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/clientconfig"
)

const (
	// clientExpiryWindow is how long before its expiry the talosconfig's client certificate is
	// warned about.
	clientExpiryWindow = 30 * 24 * time.Hour
	// noExpiryWarningEnv silences the warning like --no-expiry-warning, for scripts and CI.
	noExpiryWarningEnv  = "NODEPKI_NO_EXPIRY_WARNING"
	noExpiryWarningFlag = "no-expiry-warning"
)

func init() {
	addExpiryWarning(rootCmd)
}

// addExpiryWarning makes every command of root check the talosconfig's client certificate
// before it runs. Subcommands must not set a PersistentPreRun of their own, or cobra skips this.
func addExpiryWarning(root *cobra.Command) {
	root.PersistentFlags().Bool(noExpiryWarningFlag, false,
		"do not warn when the talosconfig's client certificate expires within 30 days or has expired (also "+noExpiryWarningEnv+"=1)")

	root.PersistentPreRun = func(cmd *cobra.Command, _ []string) {
		warnClientCertExpiry(cmd, time.Now())
	}
}

// warnClientCertExpiry prints one line on stderr when the client certificate of the context the
// command would use expires within clientExpiryWindow, and how to get a new one when it has
// expired. A missing or unreadable talosconfig says nothing: the commands that need it report that.
func warnClientCertExpiry(cmd *cobra.Command, now time.Time) {
	// config renew reports on the certificate itself.
	if expiryWarningSilenced(cmd) || cmd.Name() == "renew" && cmd.HasParent() && cmd.Parent().Name() == "config" {
		return
	}

	path, contextName, crt := clientCertificate(cmd)
	if crt == nil {
		return
	}

	writeExpiryWarning(cmd.ErrOrStderr(), path, contextName, crt, now)
}

func expiryWarningSilenced(cmd *cobra.Command) bool {
	if silenced, err := cmd.Flags().GetBool(noExpiryWarningFlag); err == nil && silenced {
		return true
	}

	silenced, err := strconv.ParseBool(os.Getenv(noExpiryWarningEnv))

	return err == nil && silenced
}

// clientCertificate is the client certificate of the context the command uses, or nil.
func clientCertificate(cmd *cobra.Command) (path, contextName string, crt *x509.Certificate) {
	path = talosconfigPath(cmd)
	if path == "" {
		return "", "", nil
	}

	cfg, err := clientconfig.Open(path)
	if err != nil {
		return "", "", nil
	}

	contextName, cctx, err := selectedContext(cmd, cfg)
	if err != nil || cctx.Crt == "" {
		return "", "", nil
	}

	if contextName == "" {
		contextName = cfg.Context
	}

	crtPEM, err := cctx.CrtPEM()
	if err != nil {
		return "", "", nil
	}

	crt, err = certs.ParseCertificate(crtPEM)
	if err != nil {
		return "", "", nil
	}

	return path, contextName, crt
}

// writeExpiryWarning writes the warning, if one is due.
func writeExpiryWarning(w io.Writer, path, contextName string, crt *x509.Certificate, now time.Time) {
	left := crt.NotAfter.Sub(now)
	roles := strings.Join(slices.Sorted(slices.Values(crt.Subject.Organization)), ",")

	switch {
	case left <= 0:
		fmt.Fprintf(w, "error: the client certificate of context %q (%s) in %s %s (%s): the nodes refuse it and `config renew` cannot renew it.\n",
			contextName, roles, path, clientconfig.Relative(left), crt.NotAfter.UTC().Format(time.RFC3339))
		fmt.Fprintln(w, "  Get a new one from the cluster's secrets bundle: `nodepkictl gen config CLUSTER ENDPOINT --with-secrets secrets.yaml "+
			"-t talosconfig -o talosconfig.new`, `nodepkictl config merge talosconfig.new` (it becomes the current context), "+
			"`nodepkictl config endpoint CONTROL-PLANE...`; or ask an admin for one (`nodepkictl config new`).")
	case left <= clientExpiryWindow:
		fmt.Fprintf(w, "warning: the client certificate of context %q (%s) in %s expires %s (%s): renew it with `nodepkictl config renew` "+
			"(silence: --%s or %s=1)\n",
			contextName, roles, path, clientconfig.Relative(left), crt.NotAfter.UTC().Format(time.RFC3339), noExpiryWarningFlag, noExpiryWarningEnv)
	}
}
