#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for FUZZ_SECONDS each (default
# 300; `make test` runs each for a few seconds). On the pinned stable toolchain, so with
# coverage guidance but without a sanitizer (`--sanitizer none`): the operator crate
# forbids unsafe code, so the findings that matter are panics, which libFuzzer catches.
# A finding is written to fuzz/artifacts/<target>/ and fails this script.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

seconds=${FUZZ_SECONDS:-300}
PATH="$("$repo_root/hack/build-cargo-fuzz.sh"):$PATH"
cd "$repo_root/fuzz"
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  say "fuzzing $target for ${seconds}s"
  # corpus/<target> collects new inputs (not committed); seeds/<target> is the committed
  # starting set.
  cargo fuzz run --sanitizer none ${FUZZ_BUILD_FLAGS:-} "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -max_len=4096 -print_final_stats=1
done
