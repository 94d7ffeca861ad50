#!/usr/bin/env bash
# Builds the local node's images as OCI archives in the cache (nothing can be pulled here)
# and prints two lines: NAME ARCHIVE for the busybox image, then for the pause image.
#   busybox: Debian's busybox-static with a link per applet; entrypoint /bin/sh.
#   pause:   the same layer, running `sleep` as the pod sandbox's process. containerd
#            only needs the sandbox to stay alive and holding its namespaces; it stops
#            it with SIGKILL, so a pause without signal handling is enough.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"
cache_root=${VAULTSYNC_CACHE:-$HOME/.cache/vaultsync}

busybox_name=localhost/vaultsync-testenv/busybox:1
pause_name=localhost/vaultsync-testenv/pause:1
version=$(dpkg-query -W -f '${Version}' busybox-static 2>/dev/null) || { echo "testenv-images: busybox-static is not installed" >&2; exit 1; }
# Keyed by what goes in, so a new busybox or crane rebuilds them.
key=$(printf '%s\n' "$version" "$CRANE_VERSION" "$(sha256sum "$0" "$here/oci-image.sh")" | sha256sum | cut -c1-16)
dir="$cache_root/images-$key"
if [[ ! -f "$dir/busybox.tar" || ! -f "$dir/pause.tar" ]]; then
  mkdir -p "$dir"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/root/bin" "$work/root/tmp" "$work/root/etc"
  cp /bin/busybox "$work/root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ -e "$work/root/bin/$applet" ]] || ln -s busybox "$work/root/bin/$applet"
  done
  chmod 1777 "$work/root/tmp"
  tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -C "$work/root" -cf "$work/busybox-layer.tar" .
  "$here/oci-image.sh" "$dir/busybox.tar" "$busybox_name" /bin/sh 0:0 "$work/busybox-layer.tar"
  "$here/oci-image.sh" "$dir/pause.tar" "$pause_name" /bin/sleep,2147483647 65535:65535 "$work/busybox-layer.tar"
fi
echo "$busybox_name $dir/busybox.tar"
echo "$pause_name $dir/pause.tar"
