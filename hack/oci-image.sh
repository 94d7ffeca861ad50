#!/usr/bin/env bash
# oci-image.sh OUT.tar NAME ENTRYPOINT USER LAYER.tar...
# Assembles an OCI image archive (an OCI image layout in a tar) from layer tarballs with
# crane, without a Docker engine: crane appends the layers onto an empty OCI base and sets
# the entrypoint and user in a throwaway in-memory registry on loopback, then pulls the
# result as an OCI layout. The layout's index names the image NAME, which is the name
# `ctr images import` gives it. ENTRYPOINT is comma-separated (crane's list syntax).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
(($# >= 5)) || { echo "usage: oci-image.sh OUT.tar NAME ENTRYPOINT USER LAYER.tar..." >&2; exit 2; }
out=$1 name=$2 entrypoint=$3 user=$4
shift 4
crane=$("$here/build-crane.sh")

work=$(mktemp -d)
registry_pid=""
cleanup() {
  [[ -z "$registry_pid" ]] || kill "$registry_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The registry picks its own free port and logs it; nothing else can grab it meanwhile.
# The log exists before the registry starts: the redirection below happens in the
# background child, which may not have run yet when the loop first reads the log.
: >"$work/registry.log"
"$crane" registry serve --address 127.0.0.1:0 >"$work/registry.log" 2>&1 &
registry_pid=$!
address=""
for _ in $(seq 1 100); do
  address=$(sed -n 's/.*serving on port \([0-9]*\).*/127.0.0.1:\1/p' "$work/registry.log" | head -n 1)
  [[ -n "$address" ]] && break
  sleep 0.1
done
[[ -n "$address" ]] || { cat "$work/registry.log" >&2; echo "oci-image: crane's registry did not start" >&2; exit 1; }

ref="$address/image:build"
layers=()
for layer in "$@"; do layers+=(-f "$layer"); done
"$crane" append --oci-empty-base --platform linux/amd64 "${layers[@]}" -t "$ref" >/dev/null 2>"$work/crane.log" ||
  { cat "$work/crane.log" >&2; exit 1; }
"$crane" mutate --set-platform linux/amd64 --entrypoint "$entrypoint" --user "$user" -t "$ref" "$ref" >/dev/null 2>>"$work/crane.log" ||
  { cat "$work/crane.log" >&2; exit 1; }
"$crane" pull --format oci "$ref" "$work/layout" 2>>"$work/crane.log" || { cat "$work/crane.log" >&2; exit 1; }

# containerd names an imported image after the manifest's ref-name annotation.
python3 - "$work/layout/index.json" "$name" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
index = json.load(open(path))
assert len(index["manifests"]) == 1, index
index["manifests"][0].setdefault("annotations", {})["org.opencontainers.image.ref.name"] = name
json.dump(index, open(path, "w"))
PY
mkdir -p "$(dirname "$out")"
tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -C "$work/layout" -cf "$out.tmp" .
mv "$out.tmp" "$out"
