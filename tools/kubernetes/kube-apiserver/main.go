// Command kube-apiserver is the upstream Kubernetes API server, built from the module versions
// pinned in tools/kubernetes/go.mod so that tests and local clusters run a known release.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
