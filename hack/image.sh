#!/usr/bin/env bash
# `make image`: the operator's container image as an OCI archive, without a Docker engine.
#   target/image/vaultsync-<version>.oci.tar, named vaultsync:<version>
#   (docker.io/library/vaultsync:<version>, what `image: vaultsync:<version>` resolves to).
# Contents: the release binary linked statically against glibc (build_static_release in
# hack/lib.sh) at /vaultsync, Debian's CA bundle at
# /etc/ssl/certs/ca-certificates.crt, and /etc/passwd and /etc/group naming the numeric
# user 65532 the image runs as. Entrypoint: /vaultsync. Assembled with crane
# (hack/oci-image.sh). When the local environment's node is up, the image is imported
# into its containerd as well.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
cd "$repo_root"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
name="docker.io/library/vaultsync:$version"
out="$repo_root/target/image/vaultsync-$version.oci.tar"
binary=$(build_static_release)

ca_bundle=/etc/ssl/certs/ca-certificates.crt
[[ -s "$ca_bundle" ]] || die "no CA bundle at $ca_bundle (apt-get install ca-certificates)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/etc/ssl/certs"
install -m 0755 "$binary" "$root/vaultsync"
install -m 0644 "$ca_bundle" "$root/etc/ssl/certs/ca-certificates.crt"
echo 'nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin' >"$root/etc/passwd"
echo 'nonroot:x:65532:' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -C "$root" -cf "$work/layer.tar" .
"$repo_root/hack/oci-image.sh" "$out" "$name" /vaultsync 65532:65532 "$work/layer.tar"

layer_size=$(gzip -c "$work/layer.tar" | wc -c)
say "image $name: $out ($(du -h "$out" | cut -f1) archive; binary $(du -h "$binary" | cut -f1), compressed layer $((layer_size / 1024)) KiB)"

# The environment's node, when up: import, replacing an older build of the same name.
if [[ -f "$state_dir/node/env.sh" ]]; then
  # shellcheck source=/dev/null
  source "$state_dir/node/env.sh"
  ctr --address "$VAULTSYNC_TEST_CONTAINERD_ADDRESS" -n k8s.io images import --snapshotter overlayfs "$out" >/dev/null ||
    die "importing $out into the node's containerd failed"
  say "imported into the node's containerd as $name"
fi
echo "$out"
