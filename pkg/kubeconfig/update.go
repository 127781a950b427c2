package kubeconfig

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// UpdateResult is the updated file and which of its entries took the new credentials.
type UpdateResult struct {
	Data []byte
	// Clusters, Users and Contexts name the entries that were updated or added.
	Clusters, Users, Contexts []string
	// Added is set when the file had no entry of the cluster: the issued one was merged in.
	Added bool
}

// Update puts the credentials of an issued kubeconfig (one cluster, user and context) into the
// entries of the same cluster in an existing kubeconfig file's contents, for a CA rotation that
// keeps a user's kubeconfig in step:
//
//   - the cluster entries of this cluster (the issued server URL, under the issued name or a name
//     Merge renamed it to, name-1, name-2, ...) get the issued CA data;
//   - every user that only contexts of this cluster use, and that authenticates with a client
//     certificate, gets the issued certificate and key (a user of tokens or an exec plugin is left
//     alone);
//   - nothing else changes: other clusters' entries, the current context, preferences.
//
// A file without any entry of this cluster gets the issued entries merged in as Merge does,
// keeping its current context if it has one. An empty existing file yields the issued kubeconfig.
func Update(existing, issued []byte) (*UpdateResult, error) {
	if len(strings.TrimSpace(string(existing))) == 0 {
		return addIssued(nil, issued)
	}

	dst, src, err := load(existing, issued)
	if err != nil {
		return nil, err
	}

	clusterName, srcCluster := single(src.Clusters)
	_, srcUser := single(src.AuthInfos)

	if len(srcUser.ClientCertificateData) == 0 || len(srcUser.ClientKeyData) == 0 {
		return nil, errors.New("the issued kubeconfig has no client certificate")
	}

	result := &UpdateResult{}

	for _, name := range slices.Sorted(maps.Keys(dst.Clusters)) {
		c := dst.Clusters[name]
		if c.Server != srcCluster.Server || !sameOrRenamed(name, clusterName) {
			continue
		}

		c.CertificateAuthority, c.CertificateAuthorityData = "", srcCluster.CertificateAuthorityData
		result.Clusters = append(result.Clusters, name)
	}

	if len(result.Clusters) == 0 {
		return addIssued(existing, issued)
	}

	for _, name := range slices.Sorted(maps.Keys(dst.Contexts)) {
		c := dst.Contexts[name]
		if !slices.Contains(result.Clusters, c.Cluster) {
			continue
		}

		result.Contexts = append(result.Contexts, name)

		user, ok := dst.AuthInfos[c.AuthInfo]
		if !ok || slices.Contains(result.Users, c.AuthInfo) || !usesClientCertificate(user) || !onlyUsedWith(dst, c.AuthInfo, result.Clusters) {
			continue
		}

		user.ClientCertificate, user.ClientCertificateData = "", srcUser.ClientCertificateData
		user.ClientKey, user.ClientKeyData = "", srcUser.ClientKeyData
		result.Users = append(result.Users, c.AuthInfo)
	}

	if result.Data, err = clientcmd.Write(*dst); err != nil {
		return nil, fmt.Errorf("error encoding the updated kubeconfig: %w", err)
	}

	return result, nil
}

// addIssued merges the issued kubeconfig into a file that has no entry of its cluster, keeping
// the file's current context when it has one.
func addIssued(existing, issued []byte) (*UpdateResult, error) {
	merged, err := Merge(existing, issued, MergeOptions{})
	if err != nil {
		return nil, err
	}

	data := merged.Data

	if len(existing) > 0 {
		before, err := clientcmd.Load(existing)
		if err != nil {
			return nil, fmt.Errorf("the existing kubeconfig cannot be read: %w", err)
		}

		if before.CurrentContext != "" {
			after, err := clientcmd.Load(merged.Data)
			if err != nil {
				return nil, fmt.Errorf("the merged kubeconfig cannot be read: %w", err)
			}

			after.CurrentContext = before.CurrentContext

			if data, err = clientcmd.Write(*after); err != nil {
				return nil, fmt.Errorf("error encoding the updated kubeconfig: %w", err)
			}
		}
	}

	cfg, err := clientcmd.Load(merged.Data)
	if err != nil {
		return nil, fmt.Errorf("the merged kubeconfig cannot be read: %w", err)
	}

	ctx := cfg.Contexts[merged.Context]

	return &UpdateResult{
		Data: data, Added: true,
		Clusters: []string{ctx.Cluster}, Users: []string{ctx.AuthInfo}, Contexts: []string{merged.Context},
	}, nil
}

// sameOrRenamed reports whether name is base or a rename of it by Merge (base-1, base-2, ...).
func sameOrRenamed(name, base string) bool {
	if name == base {
		return true
	}

	suffix, ok := strings.CutPrefix(name, base+"-")
	if !ok {
		return false
	}

	n, err := strconv.Atoi(suffix)

	return err == nil && n > 0 && strconv.Itoa(n) == suffix
}

func usesClientCertificate(u *clientcmdapi.AuthInfo) bool {
	return len(u.ClientCertificateData) > 0 || u.ClientCertificate != ""
}

// onlyUsedWith reports whether every context that uses the user points at one of the clusters:
// a user shared with another cluster keeps its credentials.
func onlyUsedWith(cfg *clientcmdapi.Config, user string, clusters []string) bool {
	for _, c := range cfg.Contexts {
		if c.AuthInfo == user && !slices.Contains(clusters, c.Cluster) {
			return false
		}
	}

	return true
}
