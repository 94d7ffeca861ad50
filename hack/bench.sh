#!/usr/bin/env bash
# `make bench`: N VaultSecrets over K distinct Key Vault secrets in several namespaces,
# with U unrelated Secrets, against a release build of the operator on the local
# environment; prints one Markdown table per N. Sizes from BENCH_SIZES (default
# "100 1000 5000"); the other knobs (BENCH_DISTINCT, BENCH_NAMESPACES, BENCH_UNRELATED,
# BENCH_CONCURRENCY, BENCH_RESTART_SECONDS, BENCH_OPERATOR_FLAGS) are described in
# examples/scale_bench.rs.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
cd "$repo_root"
# The node (kubelet, containerd) only adds noise here: no pod runs.
export VAULTSYNC_TESTENV_NODE=${VAULTSYNC_TESTENV_NODE:-off}
use_testenv
operator=$(build_static_release)
cargo build --quiet --example scale_bench
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg); operator: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
# shellcheck disable=SC2086
VAULTSYNC_OPERATOR_BINARY="$operator" target/debug/examples/scale_bench ${BENCH_SIZES:-100 1000 5000}
