package kubernetes

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/controller/generic/transform"
	"github.com/cosi-project/runtime/pkg/resource"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"github.com/siderolabs/gen/optional"
	"github.com/siderolabs/gen/xerrors"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/resources/kubernetes"
	"github.com/nodepki/nodepki/resources/pki"
)

// APIServerFilesController is the transform controller that writes kube-apiserver's files.
type APIServerFilesController = transform.Controller[*pki.AcceptedCA, *kubernetes.APIServerFiles]

// NewAPIServerFilesController writes, on a control plane, every file kube-apiserver's certificate
// flags read into dir (see pkg/kubernetes for names and flags): the accepted Kubernetes,
// aggregator and etcd CA bundles, the serving, kubelet-client, front-proxy-client and etcd-client
// key pairs, the service-account signing key and every accepted service-account public key. Each
// file is replaced atomically and only when it changes, and the files that change together are
// renamed into place together; dir is 0700 and every file 0600. APIServerFiles records digests.
//
// Nothing is written until every input exists and the set is consistent (pkg/kubernetes
// APIServerPKI.Files): a worker, which has no key pairs, never writes anything, and a rotation step
// whose new leaf is not issued yet leaves the previous, consistent files in place.
func NewAPIServerFilesController(dir string) *APIServerFilesController {
	return transform.NewController(
		transform.Settings[*pki.AcceptedCA, *kubernetes.APIServerFiles]{
			Name: "kubernetes.APIServerFilesController",
			MapMetadataOptionalFunc: func(pool *pki.AcceptedCA) optional.Optional[*kubernetes.APIServerFiles] {
				if pool.Metadata().ID() != pki.RootKubernetes {
					return optional.None[*kubernetes.APIServerFiles]()
				}

				return optional.Some(kubernetes.NewAPIServerFiles(kubernetes.APIServerFilesID))
			},
			TransformFunc: func(ctx context.Context, r controller.Reader, logger *zap.Logger, pool *pki.AcceptedCA, out *kubernetes.APIServerFiles) error {
				return writeAPIServerFiles(ctx, r, logger, dir, pool, out)
			},
		},
		transform.WithExtraInputs(
			safe.Input[*pki.NodeCertificate](controller.InputWeak),
			safe.Input[*pki.RootSecret](controller.InputWeak),
		),
	)
}

// waiting tags a missing input: the transform is retried on the next event, and the previous
// files and output stay as they are.
func waiting(format string, args ...any) error {
	return xerrors.NewTaggedf[transform.SkipReconcileTag](format, args...)
}

func writeAPIServerFiles(ctx context.Context, r controller.Reader, logger *zap.Logger, dir string, k8sPool *pki.AcceptedCA, out *kubernetes.APIServerFiles) error {
	pools := map[resource.ID]*pki.AcceptedCASpec{pki.RootKubernetes: k8sPool.TypedSpec()}

	for _, id := range []resource.ID{pki.RootAggregator, pki.RootEtcd, pki.RootServiceAccount} {
		pool, err := safe.ReaderGetByID[*pki.AcceptedCA](ctx, r, id)
		if state.IsNotFoundError(err) {
			return waiting("waiting for the %s trust pool", id)
		}

		if err != nil {
			return fmt.Errorf("error reading the %s trust pool: %w", id, err)
		}

		pools[id] = pool.TypedSpec()
	}

	pairs := map[resource.ID]kubepki.KeyPair{}

	for _, id := range []resource.ID{pki.CertKubeAPIServer, pki.CertKubeAPIServerKubeletClient, pki.CertFrontProxyClient, pki.CertEtcdClient} {
		crt, err := safe.ReaderGetByID[*pki.NodeCertificate](ctx, r, id)
		if state.IsNotFoundError(err) {
			return waiting("waiting for certificate %q", id)
		}

		if err != nil {
			return fmt.Errorf("error reading certificate %q: %w", id, err)
		}

		if crt.TypedSpec().Certificate == "" || crt.TypedSpec().Key == "" {
			return waiting("waiting for certificate %q", id)
		}

		pairs[id] = kubepki.KeyPair{Certificate: crt.TypedSpec().Certificate, Key: crt.TypedSpec().Key}
	}

	sa, err := safe.ReaderGetByID[*pki.RootSecret](ctx, r, pki.RootServiceAccount)
	if state.IsNotFoundError(err) || (err == nil && sa.TypedSpec().IssuingKey == "") {
		return waiting("waiting for the service-account signing key")
	}

	if err != nil {
		return fmt.Errorf("error reading the service-account signing key: %w", err)
	}

	files, err := kubepki.APIServerPKI{
		ClientCAs:                pools[pki.RootKubernetes].Certificates,
		Serving:                  pairs[pki.CertKubeAPIServer],
		KubeletClient:            pairs[pki.CertKubeAPIServerKubeletClient],
		AggregatorCAs:            pools[pki.RootAggregator].Certificates,
		ProxyClient:              pairs[pki.CertFrontProxyClient],
		ServiceAccountKey:        sa.TypedSpec().IssuingKey,
		ServiceAccountPublicKeys: pools[pki.RootServiceAccount].PublicKeys,
		EtcdCAs:                  pools[pki.RootEtcd].Certificates,
		EtcdClient:               pairs[pki.CertEtcdClient],
	}.Files()
	if err != nil {
		// Mid-rotation the inputs change one at a time; the previous files stay until they agree.
		logger.Warn("kube-apiserver files not written yet: their inputs disagree, waiting for the next change", zap.Error(err))

		return waiting("kube-apiserver files inconsistent: %v", err)
	}

	changed, err := atomicfile.WriteChanged(dir, files)
	if err != nil {
		return fmt.Errorf("error writing kube-apiserver files: %w", err)
	}

	spec := kubernetes.APIServerFilesSpec{
		Dir:                              dir,
		ClientCAFingerprints:             slices.Clone(pools[pki.RootKubernetes].Fingerprints),
		RequestHeaderCAFingerprints:      slices.Clone(pools[pki.RootAggregator].Fingerprints),
		EtcdCAFingerprints:               slices.Clone(pools[pki.RootEtcd].Fingerprints),
		ServiceAccountKeyFingerprints:    slices.Clone(pools[pki.RootServiceAccount].Fingerprints),
		ServiceAccountSigningFingerprint: pools[pki.RootServiceAccount].IssuingFingerprint,
		StartupDigest:                    kubepki.StartupDigest(files),
	}

	for _, name := range slices.Sorted(maps.Keys(files)) {
		spec.Files = append(spec.Files, kubernetes.FileDigest{Name: name, Digest: atomicfile.Digest(files[name])})
	}

	if len(changed) > 0 {
		logger.Info("wrote kube-apiserver files", zap.String("dir", dir), zap.Strings("files", changed))
	}

	*out.TypedSpec() = spec

	return nil
}
