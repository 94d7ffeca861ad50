#!/usr/bin/env bash
# Builds helm from its Go module (helm.sh/helm/v4, version in hack/versions.env) into the
# cache, once, and prints the binary's path. The chart's tests (tests/chart.rs) and
# `make test` call it; concurrent callers wait for one build.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

dir="$cache_root/helm-$HELM_VERSION"
helm="$dir/helm"
if [[ ! -x "$helm" ]]; then
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock 9
  if [[ ! -x "$helm" ]]; then
    say "building helm $HELM_VERSION from its Go module (a few minutes, once)"
    GOBIN="$dir/.partial" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
    mv "$dir/.partial/helm" "$helm"
    rmdir "$dir/.partial"
  fi
fi
echo "$helm"
