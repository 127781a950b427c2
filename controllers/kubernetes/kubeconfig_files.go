package kubernetes

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/cosi-project/runtime/pkg/controller"
	"github.com/cosi-project/runtime/pkg/safe"
	"github.com/cosi-project/runtime/pkg/state"
	"go.uber.org/zap"

	"github.com/nodepki/nodepki/controllers/configview"
	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/certs"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
	kubepki "github.com/nodepki/nodepki/pkg/kubernetes"
	"github.com/nodepki/nodepki/resources/kubernetes"
	"github.com/nodepki/nodepki/resources/pki"
)

// KubeconfigFilesController writes, on a control plane, the kubeconfigs of kube-controller-manager
// and kube-scheduler and the node's own admin.conf into Dir (pkg/kubernetes ComponentKubeconfigs),
// and records them as KubeconfigFiles/control-plane. As in Talos (reference §5.7), their client
// certificates are signed here with the issuing Kubernetes CA, live
// machine.certificateLifetimes.kubernetes, point at the node's own kube-apiserver and carry the
// accepted Kubernetes CA bundle as CA data.
//
// A kubeconfig on disk is kept while it fits (same server, cluster and CA data; a certificate of
// the right subject signed by the issuing CA) and until half its certificate's life: it is a bare
// Run loop rather than a transform because it wakes on that renewal time as well as on events.
// Files are replaced atomically and only when they change.
type KubeconfigFilesController struct {
	// Dir is <state-dir>/secrets/kubernetes.
	Dir string
	// Address is the node address its kube-apiserver serves on.
	Address netip.Addr
	// Clock overrides time.Now.
	Clock func() time.Time
}

// Name implements controller.Controller interface.
func (ctrl *KubeconfigFilesController) Name() string {
	return "kubernetes.KubeconfigFilesController"
}

// Inputs implements controller.Controller interface.
func (ctrl *KubeconfigFilesController) Inputs() []controller.Input {
	return []controller.Input{
		configview.Input(),
		safe.Input[*pki.RootSecret](controller.InputWeak),
		safe.Input[*pki.AcceptedCA](controller.InputWeak),
	}
}

// Outputs implements controller.Controller interface.
func (ctrl *KubeconfigFilesController) Outputs() []controller.Output {
	return []controller.Output{{Type: kubernetes.KubeconfigFilesType, Kind: controller.OutputExclusive}}
}

func (ctrl *KubeconfigFilesController) now() time.Time {
	if ctrl.Clock != nil {
		return ctrl.Clock()
	}

	return time.Now()
}

// Run implements controller.Controller interface.
func (ctrl *KubeconfigFilesController) Run(ctx context.Context, r controller.Runtime, logger *zap.Logger) error {
	renew := time.NewTimer(0)
	defer renew.Stop()

	<-renew.C

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-r.EventCh():
		case <-renew.C:
		}

		renewAt, err := ctrl.reconcile(ctx, r, logger)
		if err != nil {
			return err
		}

		renew.Stop()

		// Certificate times have a resolution of one second: waking sooner would find nothing due.
		if !renewAt.IsZero() {
			renew.Reset(max(renewAt.Sub(ctrl.now()), time.Second))
		}

		r.ResetRestartBackoff()
	}
}

// reconcile writes the kubeconfigs and returns when the first of them is due for renewal (zero:
// nothing to wait for).
func (ctrl *KubeconfigFilesController) reconcile(ctx context.Context, r controller.Runtime, logger *zap.Logger) (time.Time, error) {
	doc, err := configview.Read(ctx, r)
	if err != nil {
		return time.Time{}, err
	}

	secret, err := safe.ReaderGetByID[*pki.RootSecret](ctx, r, pki.RootKubernetes)
	if err != nil && !state.IsNotFoundError(err) {
		return time.Time{}, fmt.Errorf("error reading the Kubernetes root: %w", err)
	}

	// Only a control plane holds the Kubernetes CA key: elsewhere there is nothing to write.
	if doc == nil || !doc.Machine.IsControlPlane() || err != nil || secret.TypedSpec().IssuingKey == "" {
		if destroyErr := r.Destroy(ctx, kubernetes.NewKubeconfigFiles(kubernetes.KubeconfigFilesID).Metadata()); destroyErr != nil && !state.IsNotFoundError(destroyErr) {
			return time.Time{}, fmt.Errorf("error removing KubeconfigFiles: %w", destroyErr)
		}

		return time.Time{}, nil
	}

	pool, err := safe.ReaderGetByID[*pki.AcceptedCA](ctx, r, pki.RootKubernetes)
	if state.IsNotFoundError(err) {
		return time.Time{}, nil
	}

	if err != nil {
		return time.Time{}, fmt.Errorf("error reading the Kubernetes trust pool: %w", err)
	}

	ca, err := certs.LoadCA([]byte(secret.TypedSpec().IssuingCert), []byte(secret.TypedSpec().IssuingKey))
	if err != nil {
		return time.Time{}, fmt.Errorf("error loading the issuing Kubernetes CA: %w", err)
	}

	var clusterName string
	if doc.Cluster != nil {
		clusterName = doc.Cluster.ClusterName
	}

	server := kubepki.APIServerConfig{Address: ctrl.Address}.URL()
	bundle := kubepki.PEMBundle(pool.TypedSpec().Certificates)
	specs := kubepki.ComponentKubeconfigs(clusterName, server, bundle, doc.Machine.CertificateLifetimes.KubernetesLifetime())
	now := ctrl.now()

	files := map[string][]byte{}
	out := kubernetes.KubeconfigFilesSpec{Dir: ctrl.Dir, Server: server, CAFingerprints: slices.Clone(pool.TypedSpec().Fingerprints)}

	var firstRenewal time.Time

	for _, name := range slices.Sorted(maps.Keys(specs)) {
		data, entry, err := ctrl.kubeconfig(name, specs[name], ca, now, logger)
		if err != nil {
			return time.Time{}, err
		}

		files[name] = data
		out.Kubeconfigs = append(out.Kubeconfigs, entry)

		renewAt, _ := time.Parse(time.RFC3339, entry.RenewAt)
		if firstRenewal.IsZero() || renewAt.Before(firstRenewal) {
			firstRenewal = renewAt
		}
	}

	changed, err := atomicfile.WriteChanged(ctrl.Dir, files)
	if err != nil {
		return time.Time{}, fmt.Errorf("error writing the control-plane kubeconfigs: %w", err)
	}

	if len(changed) > 0 {
		logger.Info("wrote control-plane kubeconfigs", zap.String("dir", ctrl.Dir), zap.Strings("files", changed),
			zap.String("server", server), zap.Time("renew_at", firstRenewal))
	}

	if err = safe.WriterModify(ctx, r, kubernetes.NewKubeconfigFiles(kubernetes.KubeconfigFilesID), func(res *kubernetes.KubeconfigFiles) error {
		*res.TypedSpec() = out

		return nil
	}); err != nil {
		return time.Time{}, fmt.Errorf("error writing KubeconfigFiles: %w", err)
	}

	return firstRenewal, nil
}

// kubeconfig returns the kubeconfig on disk if it still fits spec and is not due for renewal, and
// a newly issued one otherwise.
func (ctrl *KubeconfigFilesController) kubeconfig(name string, spec kubeconfig.Spec, ca *certs.CA, now time.Time, logger *zap.Logger) ([]byte, kubernetes.KubeconfigFile, error) {
	data, readErr := os.ReadFile(filepath.Join(ctrl.Dir, name))

	why := readErr

	if readErr == nil {
		crt, renewAt, err := kubepki.KubeconfigRenewal(data, spec, ca.Crt)
		if err == nil && now.Before(renewAt) {
			return data, kubeconfigEntry(name, data, crt.Subject.String(), crt.NotAfter, renewAt), nil
		}

		why = cmp.Or(err, fmt.Errorf("due for renewal since %s", renewAt.UTC().Format(time.RFC3339)))
	}

	data, err := kubeconfig.Issue(ca, spec, now)
	if err != nil {
		return nil, kubernetes.KubeconfigFile{}, fmt.Errorf("%s: %w", name, err)
	}

	crt, renewAt, err := kubepki.KubeconfigRenewal(data, spec, ca.Crt)
	if err != nil {
		return nil, kubernetes.KubeconfigFile{}, fmt.Errorf("%s: the issued kubeconfig does not check: %w", name, err)
	}

	logger.Info("issued control-plane kubeconfig", zap.String("file", name), zap.String("subject", crt.Subject.String()),
		zap.String("serial", crt.SerialNumber.Text(16)), zap.Time("not_after", crt.NotAfter), zap.NamedError("reason", why))

	return data, kubeconfigEntry(name, data, crt.Subject.String(), crt.NotAfter, renewAt), nil
}

func kubeconfigEntry(name string, data []byte, subject string, notAfter, renewAt time.Time) kubernetes.KubeconfigFile {
	return kubernetes.KubeconfigFile{
		Name:     name,
		Digest:   atomicfile.Digest(data),
		Subject:  subject,
		NotAfter: notAfter.UTC().Format(time.RFC3339),
		RenewAt:  renewAt.UTC().Format(time.RFC3339),
	}
}
