#!/usr/bin/env bash
# Builds etcd, kube-apiserver, kube-controller-manager and kubectl (and, with --node,
# kube-scheduler and kubelet) from Go modules into a cache keyed by version, reusing what
# is already there: a cache that holds the control plane gains only the node binaries.
# Prints the bin directory.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces every k8s.io/* staging
# module with a local path. A wrapper module replaces each of them with the published
# staging release instead; the list is read from the downloaded go.mod, because it
# changes between releases.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

cache_root=${VAULTSYNC_CACHE:-$HOME/.cache/vaultsync}
bin_dir="$cache_root/kube-$KUBERNETES_VERSION-etcd-$ETCD_VERSION/bin"
kube_cmds=(kube-apiserver kube-controller-manager kubectl)
case "${1:-}" in
  --node) kube_cmds+=(kube-scheduler kubelet) ;;
  "") ;;
  *) echo "build-kube: usage: build-kube.sh [--node]" >&2; exit 2 ;;
esac
wanted=(etcd "${kube_cmds[@]}")

have_all() {
  for b in "${wanted[@]}"; do [[ -x "$bin_dir/$b" ]] || return 1; done
}
if have_all; then
  echo "$bin_dir"
  exit 0
fi

log() { echo "build-kube: $*" >&2; }
fail() { echo "build-kube: FAILED building $1: see $2" >&2; exit 1; }
command -v go >/dev/null || { echo "build-kube: go is not installed" >&2; exit 1; }

work="$cache_root/build"
mkdir -p "$work" "$bin_dir"
# Worktrees share the cache: one build at a time; a build that waited finds the binaries.
exec 9>"$work/.lock"
flock 9
if have_all; then
  echo "$bin_dir"
  exit 0
fi
export GOFLAGS=-mod=mod
export CGO_ENABLED=0

# A failing step inside the build subshells must stop them; `set -e` is ignored in a
# subshell that is the left side of `||`, so the exit status is checked separately.
# --- etcd -----------------------------------------------------------------------------
if [[ ! -x "$bin_dir/etcd" ]]; then
  log "building etcd $ETCD_VERSION (go.etcd.io/etcd/server/v3)"
  d="$work/etcd-$ETCD_VERSION"
  rm -rf "$d" && mkdir -p "$d"
  set +e
  (
    set -e
    cd "$d"
    go mod init vaultsync.local/etcd-build >/dev/null 2>&1
    go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    printf 'package main\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
    go mod tidy
    go build -trimpath -ldflags='-s -w' -o "$bin_dir/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$bin_dir/etcd.tmp" "$bin_dir/etcd"
  ) >"$work/etcd.log" 2>&1
  rc=$?
  set -e
  ((rc == 0)) || fail etcd "$work/etcd.log"
fi

# --- kubernetes -----------------------------------------------------------------------
missing=()
for c in "${kube_cmds[@]}"; do [[ -x "$bin_dir/$c" ]] || missing+=("$c"); done
if ((${#missing[@]})); then
  log "building ${missing[*]} $KUBERNETES_VERSION (k8s.io/kubernetes); a cold build takes several minutes"
  staging="v0${KUBERNETES_VERSION#v1}"
  d="$work/kube-$KUBERNETES_VERSION"
  rm -rf "$d" && mkdir -p "$d"
  set +e
  (
    set -e
    cd "$d"
    go mod init vaultsync.local/kube-build >/dev/null 2>&1
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [[ -f "$gomod" ]] || { echo "no go.mod downloaded for k8s.io/kubernetes@$KUBERNETES_VERSION"; exit 1; }
    # Lines such as `k8s.io/api => ./staging/src/k8s.io/api` name the staging modules.
    mapfile -t staged < <(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\) => \./staging/.*#\1#p' "$gomod")
    [[ ${#staged[@]} -gt 0 ]] || { echo "no staging replace lines found in $gomod"; exit 1; }
    echo "staging modules: ${staged[*]}"
    # Keep the go directive and every other replace of the upstream module too.
    go_version=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod")
    go mod edit -go="$go_version"
    go mod edit -require="k8s.io/kubernetes@$KUBERNETES_VERSION"
    # Replace only: `go mod tidy` then requires just the staging modules the commands
    # import (some, such as sample-cli-plugin, are not published for every patch).
    for m in "${staged[@]}"; do
      go mod edit -replace="$m=$m@$staging"
    done
    {
      echo "package main"
      echo
      echo "import ("
      for c in "${kube_cmds[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
      echo ")"
    } >tools.go
    go mod tidy
    for c in "${missing[@]}"; do
      echo "building $c at $(date +%T)"
      go build -trimpath -ldflags='-s -w' -o "$bin_dir/$c.tmp" "k8s.io/kubernetes/cmd/$c"
      mv "$bin_dir/$c.tmp" "$bin_dir/$c"
    done
  ) >"$work/kube.log" 2>&1
  rc=$?
  set -e
  ((rc == 0)) || fail "${missing[*]}" "$work/kube.log"
fi

have_all || { echo "build-kube: binaries missing after build in $bin_dir" >&2; exit 1; }
echo "$bin_dir"
