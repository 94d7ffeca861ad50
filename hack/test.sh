#!/usr/bin/env bash
# `make test`: start the local environment (unless one is already up), run every test,
# and stop the environment again if this run started it. Nothing is skipped: the Rust
# tests (unit, integration, the recording replay, the Rust SDK scenario), then the same
# Key Vault scenario through the official Python and Go SDKs, a short fuzz of the value
# path, then the leak scan over the whole run.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
cd "$repo_root"

use_testenv
# The integration tests mostly wait on the operator and the API server, not on the CPU:
# run more of them at once than there are cores.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-8}

# Every suite runs even when one fails (--no-fail-fast), and so does the official clients'
# scenario; the exit status says whether all passed.
# helm for the chart's tests (tests/chart.rs), built from its Go module once into the cache.
"$repo_root/hack/build-helm.sh" >/dev/null
# The operator's image (release build), imported into the node's containerd for
# tests/operator_image.rs.
"$repo_root/hack/image.sh" >/dev/null

# The leak scan's inputs (values seeded, operator logs, /metrics, Events and statuses)
# are this run's alone.
rm -rf "$state_dir/leak-scan"

failed=0
if [[ "$VAULTSYNC_TEST_KEYVAULT" == emulator ]]; then
  cargo test --workspace --no-fail-fast || failed=1
else
  # lowkey-vault has no vault of its own for the replay, which empties the vault it uses:
  # replay after everything else has finished with that vault.
  cargo test --workspace --no-fail-fast -- --skip replays_every_recording || failed=1
  cargo test --test keyvault_replay || failed=1
fi
"$repo_root/hack/keyvault-clients.sh" || failed=1
# A short fuzz of the value path (`make fuzz` runs it longer).
FUZZ_SECONDS=${VAULTSYNC_TEST_FUZZ_SECONDS:-30} "$repo_root/hack/fuzz.sh" || failed=1
# Last: every value and token of the run against everything the operator showed.
VAULTSYNC_LEAK_SCAN_FINAL=1 cargo test --test leak_scan || failed=1
((failed == 0)) || die "some tests failed (see above)"
