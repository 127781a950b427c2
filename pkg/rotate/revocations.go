package rotate

import (
	"context"

	"github.com/cosi-project/runtime/pkg/safe"

	"github.com/nodepki/nodepki/pkg/client"
	"github.com/nodepki/nodepki/pkg/revocation"
	"github.com/nodepki/nodepki/resources/pki"
)

// Revocations reads the revoked client credentials a node enforces (pki.Revocations).
func (a *NodeAPI) Revocations(ctx context.Context, node string) ([]revocation.Entry, error) {
	var out []revocation.Entry

	err := a.do(func(c *client.Client) error {
		res, err := safe.StateGetByID[*pki.Revocations](client.WithNode(ctx, node), c.COSI(), pki.RevocationsID)
		if err != nil {
			return err
		}

		out = res.TypedSpec().DeepCopy().Entries

		return nil
	})

	return out, err
}
