package rotate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodepki/nodepki/pkg/atomicfile"
	"github.com/nodepki/nodepki/pkg/ctxtime"
	"github.com/nodepki/nodepki/pkg/kubeconfig"
)

// writeTransitionalKubeconfig keeps --kubeconfig in step once every node accepts the new
// Kubernetes CA: the cluster's entries trust the old and the new CA and carry the admin
// certificate of the new CA, which every kube-apiserver accepts from then on. Clients that read
// the file before each call never see a failed call; they get a moment (ClientGrace) to read it
// before the serving certificates change.
func (r *rotation) writeTransitionalKubeconfig(ctx context.Context) error {
	if r.kube == nil || r.kube.transitional == nil || r.opts.KubeconfigPath == "" {
		return nil
	}

	changed, err := r.updateKubeconfig(r.kube.transitionalKubeconfig,
		"transitional (trusts the old and the new Kubernetes CA, admin certificate of the new CA)")
	if err != nil || !changed || r.opts.ClientGrace <= 0 {
		return err
	}

	return ctxtime.Sleep(ctx, r.opts.ClientGrace)
}

// finishKubeconfig ends a Kubernetes CA rotation: --kubeconfig gets the final credentials, an
// admin kubeconfig issued by a control plane (the new CA only); without it, the command that
// fetches one is printed.
func (r *rotation) finishKubeconfig(ctx context.Context) error {
	if r.plan.Roots.Kubernetes == nil {
		return nil
	}

	cp := r.controlPlanes()[0]

	if r.opts.KubeconfigPath == "" || r.kube == nil {
		r.out.printf("  kubeconfig: kubeconfigs of the old Kubernetes CA are refused now; for an admin kubeconfig of the new CA run:\n"+
			"    nodepkictl%s -n %s kubeconfig\n", r.talosconfigFlag(), cp.name)

		return nil
	}

	data, err := r.kubeconfig(ctx, cp.name, 0)
	if err != nil {
		return fmt.Errorf("%s: asking for the final admin kubeconfig: %w", cp.name, err)
	}

	_, err = r.updateKubeconfig(data, "final (trusts the new Kubernetes CA only, admin certificate issued by "+cp.name+")")

	return err
}

// dryRunKubeconfig says what a real run does with the kubeconfig.
func (r *rotation) dryRunKubeconfig() {
	switch {
	case r.plan.Roots.Kubernetes == nil:
	case r.opts.KubeconfigPath != "":
		r.out.printf("  kubeconfig %s would become transitional after accept and final at the end (this cluster's entries only)\n", r.opts.KubeconfigPath)
	default:
		r.out.printf("  kubeconfigs of the old Kubernetes CA stop working at the retire step: pass --kubeconfig FILE to keep one in step, or run `nodepkictl kubeconfig` afterwards\n")
	}
}

// talosconfigFlag is the --talosconfig flag of a printed command: the talosconfig rotate-ca kept.
func (r *rotation) talosconfigFlag() string {
	if r.opts.TalosconfigPath == "" {
		return ""
	}

	return " --talosconfig " + r.opts.TalosconfigPath
}

// updateKubeconfig puts the issued kubeconfig's credentials into this cluster's entries of
// --kubeconfig (atomically, 0600), leaving every other entry as it is, and says so.
func (r *rotation) updateKubeconfig(issued []byte, what string) (bool, error) {
	path := r.opts.KubeconfigPath
	if resolved, err := filepath.EvalSymlinks(path); err == nil {
		path = resolved
	}

	before, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("reading --kubeconfig %s: %w", r.opts.KubeconfigPath, err)
	}

	res, err := kubeconfig.Update(before, issued)
	if err != nil {
		return false, fmt.Errorf("--kubeconfig %s: %w", r.opts.KubeconfigPath, err)
	}

	if bytes.Equal(before, res.Data) {
		return false, nil
	}

	if err = atomicfile.WriteFile(path, res.Data); err != nil {
		return false, fmt.Errorf("writing --kubeconfig %s: %w", r.opts.KubeconfigPath, err)
	}

	r.out.printf("  kubeconfig %s: %s; context(s) %s\n", r.opts.KubeconfigPath, what, strings.Join(res.Contexts, ", "))

	return true, nil
}

// checkKubeconfigFile refuses, before anything changes, a --kubeconfig that cannot be kept in step.
func checkKubeconfigFile(path string) error {
	data, err := os.ReadFile(path)

	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("reading --kubeconfig %s: %w", path, err)
	}

	if _, err = clientcmd.Load(data); err != nil {
		return fmt.Errorf("--kubeconfig %s is not a kubeconfig rotate-ca can keep in step: %w", path, err)
	}

	return nil
}
