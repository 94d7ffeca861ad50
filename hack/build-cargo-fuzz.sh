#!/usr/bin/env bash
# Builds cargo-fuzz (version in hack/versions.env) from crates.io into the cache, once,
# and prints the directory to put on PATH. `make fuzz` and `make test` call it; concurrent
# callers wait for one build.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

dir="$cache_root/cargo-fuzz-$CARGO_FUZZ_VERSION"
if [[ ! -x "$dir/bin/cargo-fuzz" ]]; then
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock 9
  if [[ ! -x "$dir/bin/cargo-fuzz" ]]; then
    say "building cargo-fuzz $CARGO_FUZZ_VERSION from crates.io (a few minutes, once)"
    cargo install --locked --quiet "cargo-fuzz@$CARGO_FUZZ_VERSION" --root "$dir/.partial" >&2
    mkdir -p "$dir/bin"
    mv "$dir/.partial/bin/cargo-fuzz" "$dir/bin/cargo-fuzz"
    rm -rf "$dir/.partial"
  fi
fi
echo "$dir/bin"
