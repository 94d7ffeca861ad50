#!/usr/bin/env bash
# `make test`: start the local environment (unless one is already up), run every test,
# and stop the environment again if this run started it.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
cd "$repo_root"

use_testenv

cargo test --workspace
if [[ -n "$VAULTSYNC_TEST_EMULATOR_URL" ]]; then
  # The ignored tests are exactly those that need the Key Vault emulator.
  cargo test --workspace -- --ignored
else
  say "WARNING: tests that need the lowkey-vault emulator were NOT run:"
  cargo test --workspace -- --ignored --list 2>/dev/null | sed -n 's/: test$//p' | sed 's/^/testenv:   /' >&2 || true
  say "WARNING: reason: ${VAULTSYNC_TEST_EMULATOR_MISSING:-unknown}"
fi
