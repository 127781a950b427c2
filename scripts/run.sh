#!/usr/bin/env bash
# `make run`: start a local cluster of real nodepkid processes on loopback and show it working.
set -euo pipefail

bin=$1
state=$2
ctl="$bin/nodepkictl"

if [ -f "$state/cluster.yaml" ]; then
  echo "==> destroying the previous local cluster in $state"
  "$ctl" cluster destroy --state "$state"
fi

echo "==> creating a local cluster: 1 control plane (127.0.0.2, running etcd and kube-apiserver) and 2 workers (127.0.0.3, 127.0.0.4)"
"$ctl" cluster create --name demo --controlplanes 1 --workers 2 --kubernetes \
  --etcd-binary "$bin/etcd" --kube-apiserver-binary "$bin/kube-apiserver" --state "$state"

echo
echo "==> certificate statuses of every node (through the control plane's API)"
"$ctl" --talosconfig "$state/talosconfig" get certificatestatuses

echo
echo "==> accepted CAs"
"$ctl" --talosconfig "$state/talosconfig" get acceptedcas

echo
echo "==> the etcd member on the control plane, on nodepki's etcd certificates"
"$ctl" --talosconfig "$state/talosconfig" -n 127.0.0.2 etcd members

echo
echo "==> kube-apiserver on the control plane, on nodepki's Kubernetes certificates, with the admin kubeconfig $state/kubeconfig"
"$ctl" --talosconfig "$state/talosconfig" -n 127.0.0.2 get apiserverstatuses
echo "\$ kubectl --kubeconfig $state/kubeconfig get --raw /readyz"
"$bin/kubectl" --kubeconfig "$state/kubeconfig" get --raw /readyz
echo
echo "\$ kubectl --kubeconfig $state/kubeconfig auth whoami"
"$bin/kubectl" --kubeconfig "$state/kubeconfig" auth whoami

cat <<MSG

The cluster keeps running. Try:
  $ctl --talosconfig $state/talosconfig get rd
  $ctl --talosconfig $state/talosconfig get certificatestatuses -w
  $ctl --talosconfig $state/talosconfig certs check
  curl -s http://127.0.0.2:9180/metrics | grep ^nodepki_
  $ctl --talosconfig $state/talosconfig rotate-ca --os
  $ctl --talosconfig $state/talosconfig rotate-ca --etcd --dry-run=false
  $ctl --talosconfig $state/talosconfig -n 127.0.0.2 etcd snapshot db.snapshot
  $bin/kubectl --kubeconfig $state/kubeconfig get namespaces
  $ctl --talosconfig $state/talosconfig -n 127.0.0.2 kubeconfig ./admin.kubeconfig --merge=false
  $ctl cluster destroy --state $state
MSG
