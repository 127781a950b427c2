package etcd

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/controller/generic/transform"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"github.com/siderolabs/gen/xerrors"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/certs"
	etcdpkg "github.com/nodepki/nodepki/pkg/etcd"
	"github.com/nodepki/nodepki/resources/etcd"
	"github.com/nodepki/nodepki/resources/pki"
)

// PKIFilesController is the transform controller that writes the etcd PKI files.
type PKIFilesController = transform.Controller[*pki.AcceptedCA, *etcd.PKIFiles]

// NewPKIFilesController writes, on a control plane, the files etcd and its clients use into dir
// (Talos's layout): ca.crt (the etcd trust pool: issuing CA and accepted CAs, never a CA key),
// server.crt/key, peer.crt/key and admin.crt/key, each replaced atomically and only when it
// changes; dir is 0700 and every file 0600. PKIFiles records their digests.
//
// ca.crt lists the CAs ordered by fingerprint, so that its digest changes only when the set of
// trusted CAs does: a rotation step that only swaps the issuing CA rewrites the key pairs, which
// etcd reloads by itself, and needs no restart.
//
// Nothing is written until the three key pairs exist and are issued by a CA of the pool (a worker
// never has them).
func NewPKIFilesController(dir string) *PKIFilesController {
	return transform.NewController(
		transform.Settings[*pki.AcceptedCA, *etcd.PKIFiles]{
			Name: "etcd.PKIFilesController",
			MapMetadataOptionalFunc: func(pool *pki.AcceptedCA) optional.Optional[*etcd.PKIFiles] {
				if pool.Metadata().ID() != pki.RootEtcd {
					return optional.None[*etcd.PKIFiles]()
				}

				return optional.Some(etcd.NewPKIFiles(etcd.PKIFilesID))
			},
			TransformFunc: func(ctx context.Context, r controller.Reader, logger *zap.Logger, pool *pki.AcceptedCA, out *etcd.PKIFiles) error {
				return writePKIFiles(ctx, r, logger, dir, pool, out)
			},
		},
		transform.WithExtraInputs(safe.Input[*pki.NodeCertificate](controller.InputWeak)),
	)
}

// keyPairFiles maps each NodeCertificate the files hold to its certificate and key file names.
var keyPairFiles = []struct {
	id       resource.ID
	crt, key string
}{
	{pki.CertEtcdServer, etcdpkg.ServerCertFile, etcdpkg.ServerKeyFile},
	{pki.CertEtcdPeer, etcdpkg.PeerCertFile, etcdpkg.PeerKeyFile},
	{pki.CertEtcdAdmin, etcdpkg.AdminCertFile, etcdpkg.AdminKeyFile},
}

func writePKIFiles(ctx context.Context, r controller.Reader, logger *zap.Logger, dir string, pool *pki.AcceptedCA, out *etcd.PKIFiles) error {
	bundle, fingerprints, err := trustBundle(pool.TypedSpec())
	if err != nil {
		return err
	}

	files := map[string][]byte{etcdpkg.CAFile: bundle}
	spec := etcd.PKIFilesSpec{Dir: dir, TrustBundleDigest: atomicfile.Digest(bundle), TrustedFingerprints: fingerprints}
	digests := map[resource.ID]*string{pki.CertEtcdServer: &spec.ServerDigest, pki.CertEtcdPeer: &spec.PeerDigest, pki.CertEtcdAdmin: &spec.AdminDigest}

	for _, pair := range keyPairFiles {
		crt, err := safe.ReaderGetByID[*pki.NodeCertificate](ctx, r, pair.id)
		if state.IsNotFoundError(err) {
			return xerrors.NewTaggedf[transform.SkipReconcileTag]("waiting for certificate %q", pair.id)
		}

		if err != nil {
			return fmt.Errorf("error reading certificate %q: %w", pair.id, err)
		}

		c := crt.TypedSpec()
		if c.Certificate == "" || c.Key == "" {
			return xerrors.NewTaggedf[transform.SkipReconcileTag]("waiting for certificate %q", pair.id)
		}

		// The files are consistent only if etcd trusts the issuer of its own key pairs.
		if !slices.Contains(fingerprints, c.IssuerFingerprint) {
			return xerrors.NewTaggedf[transform.SkipReconcileTag]("certificate %q is issued by a CA the etcd pool does not have yet", pair.id)
		}

		if spec.IssuerFingerprint == "" || pair.id == pki.CertEtcdServer {
			spec.IssuerFingerprint = c.IssuerFingerprint
		}

		files[pair.crt] = []byte(c.Certificate)
		files[pair.key] = []byte(c.Key)
		*digests[pair.id] = atomicfile.Digest([]byte(c.Certificate + c.Key))
	}

	changed, err := atomicfile.WriteChanged(dir, files)
	if err != nil {
		return fmt.Errorf("error writing etcd PKI files: %w", err)
	}

	if len(changed) > 0 {
		logger.Info("wrote etcd PKI files", zap.String("dir", dir), zap.Strings("files", changed),
			zap.String("trust_bundle_digest", spec.TrustBundleDigest))
	}

	*out.TypedSpec() = spec

	return nil
}

// trustBundle is ca.crt: the pool's certificates ordered by fingerprint, and those fingerprints.
func trustBundle(pool *pki.AcceptedCASpec) ([]byte, []string, error) {
	type entry struct{ fingerprint, pem string }

	entries := make([]entry, 0, len(pool.Certificates))

	for _, pemText := range pool.Certificates {
		crt, err := certs.ParseCertificate([]byte(pemText))
		if err != nil {
			return nil, nil, fmt.Errorf("error parsing a CA of the etcd pool: %w", err)
		}

		entries = append(entries, entry{certs.Fingerprint(crt), pemText})
	}

	if len(entries) == 0 {
		return nil, nil, xerrors.NewTaggedf[transform.SkipReconcileTag]("the etcd pool has no CA")
	}

	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.fingerprint, b.fingerprint) })

	var (
		bundle       bytes.Buffer
		fingerprints []string
	)

	for _, e := range entries {
		bundle.WriteString(e.pem)
		fingerprints = append(fingerprints, e.fingerprint)
	}

	return bundle.Bytes(), fingerprints, nil
}
