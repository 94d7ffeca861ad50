#!/usr/bin/env bash
# `make bench`: N VaultSecrets sharing one ServiceAccount identity against a release
# build of the operator on the local environment; prints a Markdown table. Sizes from
# BENCH_SIZES (default "100 1000").
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
cd "$repo_root"
use_testenv
cargo build --release --quiet --bin vaultsync
cargo build --quiet --example scale_bench
# shellcheck disable=SC2086
VAULTSYNC_OPERATOR_BINARY="$repo_root/target/release/vaultsync" target/debug/examples/scale_bench ${BENCH_SIZES:-100 1000}
