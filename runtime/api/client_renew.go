package api

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/api/node"
	"github.com/nodepki/nodepki/pkg/audit"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// maxCSRSize bounds the PEM of a renewal CSR: a CSR for any key nodepki issues is far smaller.
const maxCSRSize = 16 << 10

// RenewClientCertificate signs a client certificate for the CSR's key with exactly the roles the
// caller authenticated with, so any role may call it without gaining anything: it only extends a
// credential the caller already holds. The CSR's subject and extensions are ignored.
func (n *nodeService) RenewClientCertificate(ctx context.Context, req *node.RenewClientCertificateRequest) (*node.RenewClientCertificateResponse, error) {
	roles := rolesFromContext(ctx)
	if len(roles) == 0 {
		// authorize lets no call through without a role; this guards against a future route that
		// skips it.
		return nil, errNotAuthorized
	}

	csr, err := parseRenewalCSR(req.GetCsr())
	if err != nil {
		return nil, err
	}

	ttl, err := requestedTTL(req.GetCrtTtlSeconds())
	if err != nil {
		return nil, err
	}

	ca, err := n.issuingOSCA(ctx)
	if err != nil {
		return nil, err
	}

	now := time.Now()
	if caLeft := ca.Crt.NotAfter.Sub(now); ttl > caLeft {
		ttl = caLeft
	}

	if ttl <= 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "the OS CA expired on %s: rotate it (`nodepkictl rotate-ca --os`) before renewing client certificates",
			ca.Crt.NotAfter.UTC().Format(time.RFC3339))
	}

	crt, err := ca.SignCSR(csr, certs.ClientProfile(roles, ttl), now)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr: %v", err)
	}

	n.server.auditIssued(ctx, audit.TypeClientRenewed, crt, ca.Crt, ttl)
	n.server.logger.Info("client certificate renewed", zap.Strings("roles", roles), zap.Duration("ttl", ttl))

	return &node.RenewClientCertificateResponse{Crt: crt, Ca: ca.CrtPEM}, nil
}

func parseRenewalCSR(data []byte) (*x509.CertificateRequest, error) {
	if len(data) == 0 {
		return nil, status.Error(codes.InvalidArgument, "csr is empty: send a PEM CERTIFICATE REQUEST signed with the client key")
	}

	if len(data) > maxCSRSize {
		return nil, status.Errorf(codes.InvalidArgument, "csr is %d bytes, more than the %d a client CSR needs", len(data), maxCSRSize)
	}

	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, status.Error(codes.InvalidArgument, "csr is not a PEM CERTIFICATE REQUEST")
	}

	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "csr cannot be parsed: %v", err)
	}

	return csr, nil
}

// issuingOSCA is the OS CA this control plane signs client certificates with.
func (n *nodeService) issuingOSCA(ctx context.Context) (*certs.CA, error) {
	cfg, err := n.server.currentConfig(ctx)
	if err != nil {
		return nil, err
	}

	if !cfg.IsControlPlane() {
		return nil, workerRefusal(cfg, "client certificates")
	}

	return n.issuingCA(ctx, pki.RootOS, "OS", "machine.ca")
}
