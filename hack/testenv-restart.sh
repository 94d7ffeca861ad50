#!/usr/bin/env bash
# Stops and starts one component of a running local environment, keeping its ports,
# flags and state (etcd's data directory, the API server's certificates), for the fault
# tests: a control plane that goes away mid-rotation and comes back as it was.
#
#   hack/testenv-restart.sh [restart|stop|start] apiserver|etcd|controller-manager
#
# `stop` stops the component (SIGTERM to its process group, SIGKILL after 10 s) and
# leaves it stopped; `start` starts it again with the command line testenv-up recorded
# and waits until it is healthy; `restart` (the default) does both.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

action=restart
case "${1:-}" in
  restart | stop | start) action=$1 && shift ;;
esac
[[ $# -eq 1 ]] || die "usage: $0 [restart|stop|start] apiserver|etcd|controller-manager"
# Only the stateless control plane and etcd (whose state is on disk): the doubles keep the
# emulator's vaults in memory, and the node's components own host state.
case "$1" in
  apiserver | kube-apiserver) name=kube-apiserver ;;
  etcd) name=etcd ;;
  controller-manager | kube-controller-manager) name=kube-controller-manager ;;
  *) die "cannot restart '$1': only apiserver, etcd and controller-manager" ;;
esac
[[ -f "$state_dir/env.sh" ]] || die "no environment is up (make testenv-up)"
[[ -f "$state_dir/cmds/$name.cmd" && -f "$state_dir/cmds/$name.health" ]] ||
  die "the environment was started before restarts were possible: make testenv-down testenv-up"
# shellcheck source=/dev/null
source "$state_dir/env.sh"

if [[ "$action" != start ]]; then
  component_alive "$name" || die "$name is not running"
  stop_component "$name"
  say "$name stopped"
fi
if [[ "$action" != stop ]]; then
  component_alive "$name" && die "$name is already running"
  eval "start_component $name $(cat "$state_dir/cmds/$name.cmd")"
  eval "wait_healthy $name 120 $(cat "$state_dir/cmds/$name.health")"
fi
