package kubeconfig

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// MergeOptions tune Merge.
type MergeOptions struct {
	// ForceContextName names the merged context instead of the issued kubeconfig's name.
	ForceContextName string
}

// MergeResult is the merged file and what happened to the names of the issued entries.
type MergeResult struct {
	Data []byte
	// Context is the name of the merged context; it is the current context of Data.
	Context string
	// Renamed lists the entries merged under another name, as "kind old -> new", because an entry
	// of that name belongs to another cluster.
	Renamed []string
}

// Merge merges an issued kubeconfig (one cluster, user and context) into an existing kubeconfig
// file's contents, as talosctl does with kubectl's file:
//
//   - the same cluster (same name and server URL) is updated in place with its context and user,
//     so fresh credentials, e.g. after a CA rotation, replace the old ones;
//   - an entry whose name belongs to another cluster is never overwritten: the issued entry is
//     renamed with the first free suffix -1, -2, ...;
//   - every other entry of the existing file is kept as it is; the merged context becomes current.
//
// With ForceContextName the context gets exactly that name; if a context of that name points at
// another cluster, Merge refuses rather than overwrite it.
func Merge(existing, issued []byte, opts MergeOptions) (*MergeResult, error) {
	dst, src, err := load(existing, issued)
	if err != nil {
		return nil, err
	}

	contextName, srcContext := single(src.Contexts)
	clusterName, srcCluster := single(src.Clusters)
	userName, srcUser := single(src.AuthInfos)

	result := &MergeResult{}

	// The cluster entry: ours when it has our server, under our name or one we renamed it to before.
	clusterName = pick(result, dst.Clusters, "cluster", clusterName, func(_ string, c *clientcmdapi.Cluster) bool { return c.Server == srcCluster.Server },
		func(_ string, c *clientcmdapi.Cluster) string { return "has server " + c.Server })
	dst.Clusters[clusterName] = srcCluster

	ours := func(_ string, c *clientcmdapi.Context) bool { return c.Cluster == clusterName }
	pointsAt := func(_ string, c *clientcmdapi.Context) string { return fmt.Sprintf("points at cluster %q", c.Cluster) }

	if opts.ForceContextName != "" {
		if !utf8.ValidString(opts.ForceContextName) || strings.ContainsFunc(opts.ForceContextName, unicode.IsControl) {
			return nil, fmt.Errorf("--force-context-name %q: a context name is printable UTF-8 text", opts.ForceContextName)
		}

		if c, ok := dst.Contexts[opts.ForceContextName]; ok && !ours("", c) {
			return nil, fmt.Errorf("context %q exists and points at cluster %q: choose another --force-context-name, or remove that context first (kubectl config delete-context %s)",
				opts.ForceContextName, c.Cluster, opts.ForceContextName)
		}

		contextName = opts.ForceContextName
	} else {
		contextName = pick(result, dst.Contexts, "context", contextName, ours, pointsAt)
	}

	userName = pick(result, dst.AuthInfos, "user", userName, func(name string, _ *clientcmdapi.AuthInfo) bool {
		owner, used := userOwner(dst, name)

		return !used || owner == clusterName
	}, func(name string, _ *clientcmdapi.AuthInfo) string {
		owner, _ := userOwner(dst, name)

		return fmt.Sprintf("is used with cluster %q", owner)
	})

	dst.AuthInfos[userName] = srcUser

	ctx := *srcContext
	ctx.Cluster, ctx.AuthInfo = clusterName, userName
	dst.Contexts[contextName] = &ctx
	dst.CurrentContext = contextName

	data, err := clientcmd.Write(*dst)
	if err != nil {
		return nil, fmt.Errorf("error encoding the merged kubeconfig: %w", err)
	}

	result.Data, result.Context = data, contextName

	return result, nil
}

// userOwner is the cluster an existing user entry is used with: the cluster of the first context
// (by name) that references it. ok is false when there is no such user or no context uses it:
// an unused entry belongs to no cluster and is replaced.
func userOwner(cfg *clientcmdapi.Config, user string) (string, bool) {
	if _, ok := cfg.AuthInfos[user]; !ok {
		return "", false
	}

	for _, name := range slices.Sorted(maps.Keys(cfg.Contexts)) {
		if c := cfg.Contexts[name]; c.AuthInfo == user {
			return c.Cluster, true
		}
	}

	return "", false
}

// pick names an issued entry of kind in m: name when it is free or ours (an entry of this
// cluster), else the first of name-1, name-2, ... that is ours (a previous merge renamed it), else
// the first of them that is free. A rename is recorded with why the entry under name is not ours.
func pick[T any](r *MergeResult, m map[string]T, kind, name string, ours func(string, T) bool, why func(string, T) string) string {
	existing, taken := m[name]
	if !taken || ours(name, existing) {
		return name
	}

	picked := ""

	// At most len(m) suffixes are taken, so one of the first len(m)+1 is free.
	for i := 1; i <= len(m)+1; i++ {
		candidate := name + "-" + strconv.Itoa(i)

		entry, ok := m[candidate]
		if ok && ours(candidate, entry) {
			picked = candidate

			break
		}

		if !ok && picked == "" {
			picked = candidate
		}
	}

	r.Renamed = append(r.Renamed, fmt.Sprintf("%s %q -> %q (the existing one %s)", kind, name, picked, why(name, existing)))

	return picked
}

func single[T any](m map[string]T) (string, T) {
	for k, v := range m {
		return k, v
	}

	var zero T

	return "", zero
}

// load reads an existing kubeconfig and an issued one, which holds exactly one cluster, user and
// context.
func load(existing, issued []byte) (dst, src *clientcmdapi.Config, err error) {
	if dst, err = clientcmd.Load(existing); err != nil {
		return nil, nil, fmt.Errorf("the existing kubeconfig cannot be read: %w", err)
	}

	if src, err = clientcmd.Load(issued); err != nil {
		return nil, nil, fmt.Errorf("the issued kubeconfig cannot be read: %w", err)
	}

	if len(src.Contexts) != 1 || len(src.Clusters) != 1 || len(src.AuthInfos) != 1 {
		return nil, nil, errors.New("the issued kubeconfig must hold exactly one cluster, user and context")
	}

	return dst, src, nil
}
