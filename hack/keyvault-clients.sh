#!/usr/bin/env bash
# Runs the Key Vault client scenario (testenv/keyvault-clients/) with the official Python
# and Go Key Vault secrets clients against the Key Vault emulator. (The Rust client's run
# of the same scenario is tests/keyvault_clients.rs, run by `cargo test`.)
#
# Expects the environment of .testenv/env.sh (this script sources nothing):
#   VAULTSYNC_TEST_EMULATOR_URL  https base URL of one emulator vault
#   VAULTSYNC_TEST_CA_FILE       PEM CA the emulator's certificate chains to
#   VAULTSYNC_CACHE              optional, default ~/.cache/vaultsync
# Sets up what it needs in the cache when missing (a virtualenv from PyPI, a binary built
# with modules from the Go module proxy), keyed by the pinned versions, and reuses it.
# Runs both scenarios even if the first fails; exits non-zero if either failed.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
clients_dir=$repo_root/testenv/keyvault-clients
cache_root=${VAULTSYNC_CACHE:-$HOME/.cache/vaultsync}

say() { echo "keyvault-clients: $*" >&2; }
die() { echo "keyvault-clients: ERROR: $*" >&2; exit 1; }

[[ -n "${VAULTSYNC_TEST_EMULATOR_URL:-}" ]] ||
  die "VAULTSYNC_TEST_EMULATOR_URL is not set or empty: source .testenv/env.sh of an environment with the Key Vault emulator"
[[ "$VAULTSYNC_TEST_EMULATOR_URL" == https://* ]] ||
  die "VAULTSYNC_TEST_EMULATOR_URL must be an https URL (Key Vault clients refuse plain http): $VAULTSYNC_TEST_EMULATOR_URL"
[[ -n "${VAULTSYNC_TEST_CA_FILE:-}" && -r "$VAULTSYNC_TEST_CA_FILE" ]] ||
  die "VAULTSYNC_TEST_CA_FILE is not set or not readable: '${VAULTSYNC_TEST_CA_FILE:-}'"

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# The virtualenv is complete only once its stamp exists; anything else is rebuilt.
python_env() {
  local requirements=$clients_dir/python/requirements.txt
  local venv=$cache_root/keyvault-clients/python-$(hash_of "$requirements")
  if [[ ! -f "$venv/.complete" ]]; then
    say "creating the Python virtualenv $venv"
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" >&2 || die "python3 -m venv failed"
    "$venv/bin/python" -m pip install --quiet --no-input -r "$requirements" >&2 ||
      die "pip install -r $requirements failed"
    touch "$venv/.complete"
  fi
  echo "$venv"
}

# Built from the committed go.mod/go.sum (-mod=readonly: a missing or changed sum fails).
go_binary() {
  local src=$clients_dir/go
  local bin=$cache_root/keyvault-clients/go-$(hash_of "$src/go.mod" "$src/go.sum" "$src"/*.go)/keyvault-clients
  if [[ ! -x "$bin" ]]; then
    command -v go >/dev/null || die "go is not on PATH"
    say "building the Go scenario into $bin"
    mkdir -p "$(dirname "$bin")"
    (cd "$src" && go build -mod=readonly -buildvcs=false -o "$bin.tmp" .) >&2 || die "go build in $src failed"
    mv "$bin.tmp" "$bin"
  fi
  echo "$bin"
}

venv=$(python_env)
go_bin=$(go_binary)

failed=()
say "Python (azure-keyvault-secrets) against $VAULTSYNC_TEST_EMULATOR_URL"
"$venv/bin/python" "$clients_dir/python/scenario.py" || failed+=(python)
say "Go (azsecrets) against $VAULTSYNC_TEST_EMULATOR_URL"
"$go_bin" || failed+=(go)

if ((${#failed[@]})); then
  die "the Key Vault client scenario FAILED with: ${failed[*]} (see the step named above)"
fi
say "the Python and Go Key Vault clients passed the scenario"
