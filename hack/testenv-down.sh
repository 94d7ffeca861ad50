#!/usr/bin/env bash
# Stops exactly the processes testenv-up started (by their pid files), undoes what the
# node changed on the host (hack/testenv-node.sh down), and removes the state.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[[ -d "$state_dir" ]] || exit 0
# The node first, while the API server can still tell the kubelet to stop its pods.
"$repo_root/hack/testenv-node.sh" down
stopped=()
shopt -s nullglob
# Reverse start order: the doubles and the controller manager before the API server and etcd.
for name in vaultsync testenv-token-refresher azure-doubles lowkey-vault kube-controller-manager kube-apiserver etcd; do
  component_alive "$name" || continue
  stop_component "$name"
  stopped+=("$name")
done
rm -rf "$state_dir"
((${#stopped[@]} == 0)) || say "stopped ${stopped[*]}"
