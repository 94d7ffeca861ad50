#!/usr/bin/env bash
# `make demo`: the main job end to end on the local environment. Starts the environment,
# seeds the article's secret (ExampleSecret = MyAKSExampleSecret) in the Key Vault
# emulator, runs the operator, applies deploy/examples/vaultsecret.yaml (pointed at the
# local vault gateway), waits for Ready, shows the status and the synced value, then sets
# a new value in Key Vault and shows the Secret rotating.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
cd "$repo_root"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$repo_root/hack/testenv-up.sh"
# shellcheck source=/dev/null
source "$state_dir/env.sh"
cargo build --quiet --bin vaultsync

step "Install the VaultSecret CRD"
kubectl apply -f crds/vaultsecret.yaml
kubectl wait --for=condition=Established crd/vaultsecrets.vaultsync.io --timeout=60s >/dev/null

emulator_ready=true
if [[ -z "$VAULTSYNC_TEST_EMULATOR_URL" ]]; then
  emulator_ready=false
else
  step "Seed the article's secret in Key Vault: ExampleSecret"
  curl -fsS --cacert "$VAULTSYNC_TEST_CA_FILE" -H 'Authorization: Bearer seed' -H 'content-type: application/json' \
    -X PUT "$VAULTSYNC_TEST_EMULATOR_URL/secrets/ExampleSecret?api-version=7.6" -d '{"value":"MyAKSExampleSecret"}' >/dev/null
  echo "ExampleSecret set"
fi

step "Run the operator (log: $state_dir/logs/vaultsync.log)"
if ! component_alive vaultsync; then
  start_component vaultsync "$repo_root/target/debug/vaultsync" run --health-addr 127.0.0.1:0
fi
sleep 1
component_alive vaultsync || die "vaultsync exited at start-up (log: $state_dir/logs/vaultsync.log)"

step "Apply deploy/examples/vaultsecret.yaml (vaultUrl set to the local gateway, refresh every 10s)"
sed -e "s#https://my-vault.vault.azure.net#$VAULTSYNC_TEST_VAULT_URL#" -e 's#refreshInterval: 1h#refreshInterval: 10s#' \
  deploy/examples/vaultsecret.yaml | tee /dev/stderr | kubectl apply -f -

step "Wait for Ready"
wait_timeout=60s
$emulator_ready || wait_timeout=15s
if ! kubectl wait --for=condition=Ready vsec/example-secret --timeout=$wait_timeout; then
  kubectl get vsec example-secret
  kubectl describe vsec example-secret | sed -n '/^Status:/,$p'
  if ! $emulator_ready; then
    die "the demo cannot sync: the lowkey-vault Key Vault emulator is unavailable (${VAULTSYNC_TEST_EMULATOR_MISSING:-unknown reason}); the VaultSecret above reports what the operator saw"
  fi
  die "the VaultSecret did not become Ready (see the status above and $state_dir/logs/vaultsync.log)"
fi
kubectl get vsec example-secret
kubectl get vsec example-secret -o jsonpath='{.status}' | python3 -m json.tool
printf 'Secret example-secret, key password: %s\n' "$(kubectl get secret example-secret -o jsonpath='{.data.password}' | base64 -d)"

step "Rotate: set a new value in Key Vault"
curl -fsS --cacert "$VAULTSYNC_TEST_CA_FILE" -H 'Authorization: Bearer seed' -H 'content-type: application/json' \
  -X PUT "$VAULTSYNC_TEST_EMULATOR_URL/secrets/ExampleSecret?api-version=7.6" -d '{"value":"MyAKSExampleSecret-rotated"}' >/dev/null
for _ in $(seq 1 60); do
  value=$(kubectl get secret example-secret -o jsonpath='{.data.password}' | base64 -d)
  [[ "$value" == "MyAKSExampleSecret-rotated" ]] && break
  sleep 1
done
printf 'Secret example-secret, key password: %s\n' "$value"
kubectl get events --field-selector involvedObject.name=example-secret
printf '\nThe environment and the operator stay up: source %s; `make testenv-down` stops both.\n' "$state_dir/env.sh"
