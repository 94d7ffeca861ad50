#!/usr/bin/env bash
# Fetches the lowkey-vault Key Vault emulator (a runnable Spring Boot jar) from Maven
# Central into the cache, reusing it when present. Prints the jar's path.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=hack/versions.env
source "$here/versions.env"

artifact="com.github.nagyesta.lowkey-vault:lowkey-vault-app:$LOWKEY_VAULT_VERSION"
cache_root=${VAULTSYNC_CACHE:-$HOME/.cache/vaultsync}
dir="$cache_root/lowkey-vault-$LOWKEY_VAULT_VERSION"
jar="$dir/lowkey-vault-app-$LOWKEY_VAULT_VERSION.jar"
if [[ -s "$jar" ]]; then
  echo "$jar"
  exit 0
fi
command -v mvn >/dev/null || { echo "fetch-lowkey-vault: mvn is not installed" >&2; exit 1; }
mkdir -p "$dir"
log="$dir/fetch.log"
echo "fetch-lowkey-vault: fetching $artifact from Maven Central" >&2
if ! mvn -B -q -U dependency:copy -Dartifact="$artifact:jar" -DoutputDirectory="$dir" -Dtransitive=false >"$log" 2>&1; then
  reason=$(grep -m1 -oE 'Could not (find|resolve|transfer) artifact[^:]*: [^\[]*|Could not find artifact [^ ]+ in [a-z]+' "$log" || true)
  echo "fetch-lowkey-vault: cannot fetch $artifact: ${reason:-see $log}" >&2
  exit 1
fi
[[ -s "$jar" ]] || { echo "fetch-lowkey-vault: Maven reported success but $jar is missing" >&2; exit 1; }
echo "$jar"
