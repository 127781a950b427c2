package rotate

import (
	"fmt"
	"os"
	"time"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/bundle"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/machineconfig"
)

// bundleField names the secrets.yaml field of a root, for messages.
var bundleField = map[Root]string{
	RootOS:             "certs.os",
	RootKubernetes:     "certs.k8s",
	RootEtcd:           "certs.etcd",
	RootAggregator:     "certs.k8saggregator",
	RootServiceAccount: "certs.k8sserviceaccount",
	RootJoinToken:      "trustdinfo.token",
}

// bundleRoot returns the secrets.yaml entry of a root as Material (Fingerprint set), or false
// when the bundle has none.
func bundleRoot(b *bundle.Bundle, root Root) (Material, bool, error) {
	if b.Certs == nil && root != RootJoinToken {
		return Material{}, false, nil
	}

	var pair *machineconfig.CertificateAndKey

	switch root {
	case RootJoinToken:
		if b.TrustdInfo == nil || b.TrustdInfo.Token == "" {
			return Material{}, false, nil
		}

		return Material{Token: b.TrustdInfo.Token, Fingerprint: tokenFingerprint(b.TrustdInfo.Token)}, true, nil
	case RootOS:
		pair = b.Certs.OS
	case RootKubernetes:
		pair = b.Certs.K8s
	case RootEtcd:
		pair = b.Certs.Etcd
	case RootAggregator:
		pair = b.Certs.K8sAggregator
	case RootServiceAccount:
		if b.Certs.K8sServiceAccount == nil {
			return Material{}, false, nil
		}

		fingerprint, err := keyFingerprint(b.Certs.K8sServiceAccount.Key)
		if err != nil {
			return Material{}, false, fmt.Errorf("%s.key: %w", bundleField[root], err)
		}

		return Material{Key: b.Certs.K8sServiceAccount.Key, Fingerprint: fingerprint}, true, nil
	}

	if pair == nil {
		return Material{}, false, nil
	}

	crt, err := certs.ParseCertificate(pair.Crt)
	if err != nil {
		return Material{}, false, fmt.Errorf("%s.crt: %w", bundleField[root], err)
	}

	return Material{Crt: pair.Crt, Key: pair.Key, Fingerprint: certs.Fingerprint(crt)}, true, nil
}

func setBundleRoot(b *bundle.Bundle, root Root, m Material) {
	if b.Certs == nil {
		b.Certs = &bundle.Certs{}
	}

	pair := &machineconfig.CertificateAndKey{Crt: m.Crt, Key: m.Key}

	switch root {
	case RootJoinToken:
		b.TrustdInfo = &bundle.TrustdInfo{Token: m.Token}
	case RootOS:
		b.Certs.OS = pair
	case RootKubernetes:
		b.Certs.K8s = pair
	case RootEtcd:
		b.Certs.Etcd = pair
	case RootAggregator:
		b.Certs.K8sAggregator = pair
	case RootServiceAccount:
		b.Certs.K8sServiceAccount = &machineconfig.Key{Key: m.Key}
	}
}

// checkSecrets makes sure the secrets.yaml at path is this cluster's: each rotated root must be
// the plan's old or new one. It changes nothing.
func checkSecrets(path string, plan *Plan) error {
	b, err := bundle.Load(path)
	if err != nil {
		return fmt.Errorf("--with-secrets: %w", err)
	}

	for _, root := range plan.Roots.List() {
		rp := plan.Roots.Get(root)

		m, ok, err := bundleRoot(b, root)
		if err != nil {
			return fmt.Errorf("--with-secrets %s: %w", path, err)
		}

		if !ok {
			return fmt.Errorf("--with-secrets %s: %s is missing: pass the cluster's secrets.yaml", path, bundleField[root])
		}

		switch {
		case m.Fingerprint == rp.Old.Fingerprint || m.Fingerprint == rp.New.Fingerprint:
		case root == RootJoinToken:
			return fmt.Errorf("--with-secrets %s: %s is neither the cluster's join token nor the plan's new one: pass the cluster's secrets.yaml",
				path, bundleField[root])
		default:
			return fmt.Errorf("--with-secrets %s: %s is %s %s, but the cluster's is %s: pass the cluster's secrets.yaml",
				path, bundleField[root], root.what(), shortFingerprint(m.Fingerprint), shortFingerprint(rp.Old.Fingerprint))
		}
	}

	return nil
}

// updateSecrets puts the plan's new roots into the secrets.yaml at path. The file as it was is
// first copied to a timestamped backup beside it; the new one is validated and written
// atomically. A bundle that already holds the new roots is left alone (changed is false).
func updateSecrets(path string, plan *Plan, now time.Time) (backup string, changed bool, err error) {
	original, err := os.ReadFile(path)
	if err != nil {
		return "", false, fmt.Errorf("reading %s: %w", path, err)
	}

	b, err := bundle.Parse(original)
	if err != nil {
		return "", false, fmt.Errorf("%s: %w", path, err)
	}

	for _, root := range plan.Roots.List() {
		rp := plan.Roots.Get(root)

		m, _, err := bundleRoot(b, root)
		if err != nil {
			return "", false, fmt.Errorf("%s: %w", path, err)
		}

		if m.Fingerprint == rp.New.Fingerprint {
			continue
		}

		setBundleRoot(b, root, rp.New)

		changed = true
	}

	if !changed {
		return "", false, nil
	}

	backup = fmt.Sprintf("%s.%s.bak", path, now.UTC().Format("20060102T150405Z"))

	if err = atomicfile.WriteFile(backup, original); err != nil {
		return "", false, fmt.Errorf("backing up %s: %w", path, err)
	}

	if err = b.WriteFile(path, true); err != nil {
		return backup, false, fmt.Errorf("updating %s (the original is in %s): %w", path, backup, err)
	}

	return backup, true, nil
}
