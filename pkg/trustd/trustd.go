// Package trustd is the client side of trustd, the certificate-signing service of control-plane
// nodes (:50001): a worker sends a CSR with the join token and gets back a server certificate for
// its node API, signed by the OS CA. The server is in runtime/trustd; the constants both sides
// share live here, so that controllers and libraries reach trustd without importing the runtime.
package trustd

// DefaultPort is the port trustd listens on and the port the client dials when an endpoint has none.
const DefaultPort = 50001

// TokenMetadataKey is the gRPC metadata key carrying the join token, as in Talos.
const TokenMetadataKey = "token"
