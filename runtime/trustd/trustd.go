// Package trustd owns the certificate-signing service of control-plane nodes (the trustd role,
// :50001) and its client: workers send a CSR with the join token and get back a server
// certificate for their node API, signed by the OS CA under a strict policy (policy.go: the
// shape of the request; ownership.go: only names the requester owns). Each worker signed for is
// recorded as a cluster.Member under the address it called from (members.go), which is how
// rotate-ca finds the workers.
package trustd

import "time"

// DefaultPort is the port trustd listens on and the port the client dials when an endpoint has none.
const DefaultPort = 50001

// TokenMetadataKey is the gRPC metadata key carrying the join token, as in Talos.
const TokenMetadataKey = "token"

// CertificateLifetime is the lifetime of every certificate trustd signs.
const CertificateLifetime = 24 * time.Hour
