#!/usr/bin/env bash
# Builds crane (github.com/google/go-containerregistry) from the Go module proxy into the
# cache, keyed by version, and prints its path. The images here are assembled with it:
# no Docker engine runs and no base image can be pulled.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
cache_root=${VAULTSYNC_CACHE:-$HOME/.cache/vaultsync}
bin_dir="$cache_root/crane-$CRANE_VERSION/bin"
if [[ ! -x "$bin_dir/crane" ]]; then
  command -v go >/dev/null || { echo "build-crane: go is not installed" >&2; exit 1; }
  mkdir -p "$bin_dir"
  echo "build-crane: building crane $CRANE_VERSION" >&2
  log="$cache_root/crane-$CRANE_VERSION/build.log"
  GOBIN="$bin_dir" CGO_ENABLED=0 go install -trimpath -ldflags='-s -w' \
    "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION" >"$log" 2>&1 ||
    { echo "build-crane: FAILED: see $log" >&2; exit 1; }
fi
echo "$bin_dir/crane"
