// Package role owns the API roles a client certificate carries in its Organization (as in Talos)
// and the one check of a requested role list that the CLI, the secrets bundle and the node API share.
package role

import (
	"fmt"
	"slices"
	"strings"
)

// Roles that grant access.
const (
	Admin      = "os:admin"
	Operator   = "os:operator"
	Reader     = "os:reader"
	EtcdBackup = "os:etcd:backup"
	// Impersonator grants nothing by itself: it lets a control plane forwarding a call assert the
	// original caller's roles. Client certificates are never issued with it.
	Impersonator = "os:impersonator"
)

// All lists the roles a client certificate may be issued with, in a stable order.
var All = []string{Admin, Operator, Reader, EtcdBackup}

// IsKnown reports whether r is one of All.
func IsKnown(r string) bool {
	return slices.Contains(All, r)
}

// Check validates roles requested for a client certificate and returns them trimmed, sorted and
// deduplicated.
func Check(roles []string) ([]string, error) {
	if len(roles) == 0 {
		return nil, fmt.Errorf("no roles given: want one or more of %s", strings.Join(All, ", "))
	}

	out := make([]string, 0, len(roles))

	for _, r := range roles {
		r = strings.TrimSpace(r)
		if !IsKnown(r) {
			return nil, fmt.Errorf("unknown role %q: want one or more of %s", r, strings.Join(All, ", "))
		}

		out = append(out, r)
	}

	slices.Sort(out)

	return slices.Compact(out), nil
}
