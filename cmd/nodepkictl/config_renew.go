package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	nodeapi "github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/clientconfig"
)

func newConfigRenewCmd() *cobra.Command {
	var crtTTL time.Duration

	cmd := &cobra.Command{
		Use:   "renew",
		Short: "Renew the client certificate of the context: same key, same roles, new expiry",
		Long: `Renew the client certificate of the current context (or --context) before it expires.

A certificate request made with the context's own key goes to a control-plane node (the first
endpoint, or the single node given with --nodes), which signs a new certificate for that key with
exactly the roles the current certificate carries: any role may renew, and nobody gains a role.
The new certificate is tried against the node before the context is rewritten (atomically, mode
0600); the key, CA, endpoints and nodes of the context stay as they are. The old certificate stays
valid until it expires.

An expired certificate cannot renew itself: the nodes refuse it. Get a new talosconfig from the
secrets bundle then (gen config --with-secrets secrets.yaml -t talosconfig), or ask an admin
(config new).`,
		Example: `  # renew the current context's certificate for as long as it was issued for
  nodepkictl config renew

  # renew another context's for 90 days
  nodepkictl config renew --context reader@demo --crt-ttl 2160h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConfigRenew(cmd, crtTTL, time.Now())
		},
	}

	cmd.Flags().DurationVar(&crtTTL, "crt-ttl", 0, "lifetime of the new certificate (default: that of the current one)")

	return cmd
}

func runConfigRenew(cmd *cobra.Command, crtTTL time.Duration, now time.Time) error {
	if crtTTL < 0 {
		return fmt.Errorf("--crt-ttl must be positive, got %s", crtTTL)
	}

	cfg, path, err := openTalosconfig(cmd, false)
	if err != nil {
		return err
	}

	contextName, cctx, err := selectedContext(cmd, cfg)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}

	if contextName == "" {
		contextName = cfg.Context
	}

	old, key, err := contextCredentials(cctx)
	if err != nil {
		return fmt.Errorf("context %q in %s: %w", contextName, path, err)
	}

	if !now.Before(old.NotAfter) {
		return fmt.Errorf("the client certificate of context %q in %s expired on %s: the nodes refuse it, so it cannot be renewed; "+
			"get a new one with `nodepkictl gen config CLUSTER ENDPOINT --with-secrets secrets.yaml -t talosconfig -o talosconfig.new` "+
			"or from an admin (`nodepkictl config new`)", contextName, path, old.NotAfter.UTC().Format(time.RFC3339))
	}

	if crtTTL == 0 {
		// The lifetime it was issued for: NotBefore is backdated by certs.Backdate.
		crtTTL = max(old.NotAfter.Sub(old.NotBefore)-certs.Backdate, time.Second).Round(time.Second)
	}

	renewed, err := requestRenewal(cmd, old, key, crtTTL)
	if err != nil {
		return err
	}

	updated := *cctx
	updated.Crt = base64.StdEncoding.EncodeToString(renewed)

	if err = probeContext(cmd, &updated); err != nil {
		return fmt.Errorf("the renewed certificate does not work, %s is unchanged: %w", path, err)
	}

	// Reread so that a change made to the file meanwhile is kept; only this context's crt changes.
	cfg, path, err = openTalosconfig(cmd, false)
	if err != nil {
		return err
	}

	current, err := cfg.Lookup(contextName)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}

	if current.Key != cctx.Key || current.Crt != cctx.Crt {
		return fmt.Errorf("context %q in %s changed while renewing: nothing was written; run config renew again", contextName, path)
	}

	current.Crt = updated.Crt

	if err = cfg.Save(path); err != nil {
		return err
	}

	crt, err := certs.ParseCertificate(renewed)
	if err != nil {
		return err
	}

	fmt.Fprintf(cmd.OutOrStdout(), "renewed the client certificate of context %q (roles %s, same key): valid until %s (was %s); wrote %s\n",
		contextName, strings.Join(slices.Sorted(slices.Values(crt.Subject.Organization)), ","), crt.NotAfter.UTC().Format(time.RFC3339),
		old.NotAfter.UTC().Format(time.RFC3339), path)

	return nil
}

// contextCredentials is the context's client certificate and the key it is for.
func contextCredentials(cctx *clientconfig.Context) (*x509.Certificate, crypto.Signer, error) {
	crtPEM, err := cctx.CrtPEM()
	if err != nil {
		return nil, nil, err
	}

	crt, err := certs.ParseCertificate(crtPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("client certificate: %w", err)
	}

	keyPEM, err := cctx.KeyPEM()
	if err != nil {
		return nil, nil, err
	}

	key, err := certs.ParsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("client key: %w", err)
	}

	if !certs.KeyMatchesCertificate(crt, key) {
		return nil, nil, errors.New("the client key does not belong to the client certificate")
	}

	return crt, key, nil
}

// requestRenewal sends a CSR made with key and returns the new certificate (PEM) after checking
// that it is what was asked for: the same key and exactly the old roles, for client auth.
func requestRenewal(cmd *cobra.Command, old *x509.Certificate, key crypto.Signer, ttl time.Duration) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: old.Subject}, key)
	if err != nil {
		return nil, fmt.Errorf("creating the certificate request: %w", err)
	}

	overrides := readClientOverrides(cmd)
	if len(overrides.nodes) > 1 {
		return nil, fmt.Errorf("config renew asks a single control-plane node, got %d with --nodes", len(overrides.nodes))
	}

	ctx := cmd.Context()

	s, err := connect(ctx, cmd)
	if err != nil {
		return nil, err
	}

	defer s.Close()

	label := s.endpoints[0]
	if len(overrides.nodes) == 1 {
		label = overrides.nodes[0]
		ctx = client.WithNode(ctx, label)
	}

	resp, err := s.client.Node().RenewClientCertificate(ctx, &nodeapi.RenewClientCertificateRequest{
		Csr:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
		CrtTtlSeconds: int64(ttl / time.Second),
	})
	if status.Code(err) == codes.Unimplemented {
		return nil, fmt.Errorf("%s: this node does not offer client certificate renewal (RenewClientCertificate): upgrade it, "+
			"or get a new talosconfig with `nodepkictl config new`: %w", label, err)
	}

	if err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}

	crt, err := certs.ParseCertificate(resp.GetCrt())
	if err != nil {
		return nil, fmt.Errorf("%s returned an unusable certificate: %w", label, err)
	}

	if err = checkRenewed(old, key, crt, resp.GetCa()); err != nil {
		return nil, fmt.Errorf("%s returned a certificate that is not a renewal: %w", label, err)
	}

	return resp.GetCrt(), nil
}

func checkRenewed(old *x509.Certificate, key crypto.Signer, crt *x509.Certificate, caPEM []byte) error {
	if !certs.KeyMatchesCertificate(crt, key) {
		return errors.New("it is for another key")
	}

	oldRoles, newRoles := slices.Sorted(slices.Values(old.Subject.Organization)), slices.Sorted(slices.Values(crt.Subject.Organization))
	if !slices.Equal(oldRoles, newRoles) {
		return fmt.Errorf("roles %v instead of %v", newRoles, oldRoles)
	}

	cas, err := certs.ParseCertificates(caPEM)
	if err != nil {
		return fmt.Errorf("its CA: %w", err)
	}

	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}

	if _, err = crt.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("it does not verify as a client certificate of its CA: %w", err)
	}

	return nil
}

// probeContext makes one call with the context, through the same endpoints, to prove the nodes
// accept it.
func probeContext(cmd *cobra.Command, cctx *clientconfig.Context) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
	defer cancel()

	endpoints := readClientOverrides(cmd).endpoints

	cl, err := client.New(ctx, client.ClientOptions{Context: cctx, Endpoints: endpoints})
	if err != nil {
		return err
	}

	defer cl.Close()

	_, err = cl.Node().Version(ctx, &nodeapi.VersionRequest{})

	return err
}
