package api

import (
	"context"

	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/resources/pki"
)

// issuingCA loads the issuing CA of root from this node's RootSecrets, for the calls that sign
// credentials on a control plane; name ("OS") and field ("machine.ca") word its errors.
func (n *nodeService) issuingCA(ctx context.Context, root resource.ID, name, field string) (*certs.CA, error) {
	secret, err := safe.StateGetByID[*pki.RootSecret](ctx, n.server.opts.State, root)

	switch {
	case state.IsNotFoundError(err):
		return nil, status.Errorf(codes.FailedPrecondition, "the %s root is not loaded yet: retry shortly", name)
	case err != nil:
		return nil, status.Errorf(codes.Internal, "error reading the %s root: %v", name, err)
	}

	if secret.TypedSpec().IssuingKey == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "this node holds no %s CA key (%s.key)", name, field)
	}

	ca, err := certs.LoadCA([]byte(secret.TypedSpec().IssuingCert), []byte(secret.TypedSpec().IssuingKey))
	if err != nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the %s CA (%s) is unusable: %v", name, field, err)
	}

	return ca, nil
}
