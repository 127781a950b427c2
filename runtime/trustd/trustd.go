// Package trustd owns the certificate-signing service of control-plane nodes (the trustd role,
// :50001): workers send a CSR with the join token and get back a server
// certificate for their node API, signed by the OS CA under a strict policy (policy.go: the
// shape of the request; ownership.go: only names the requester owns). Each worker signed for is
// recorded as a cluster.Member under the address it called from (members.go), which is how
// rotate-ca finds the workers. The client is pkg/trustd.
package trustd

import (
	"time"

	"github.com/nodepki/nodepki/pkg/trustd"
)

// DefaultPort is the port trustd listens on (pkg/trustd.DefaultPort).
const DefaultPort = trustd.DefaultPort

// TokenMetadataKey is the gRPC metadata key carrying the join token (pkg/trustd.TokenMetadataKey).
const TokenMetadataKey = trustd.TokenMetadataKey

// CertificateLifetime is the lifetime of the certificates trustd signs when the control plane's
// config sets none (machine.certificateLifetimes.api), and the bound of Options.Lifetime.
const CertificateLifetime = 24 * time.Hour
