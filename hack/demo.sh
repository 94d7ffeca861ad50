#!/usr/bin/env bash
# `make demo`: the main job end to end on the local environment. Starts the environment,
# seeds the article's secret (ExampleSecret = MyAKSExampleSecret) in the Key Vault
# emulator through its REST API, runs the operator, grants its identity to namespace
# default, applies deploy/examples/vaultsecret.yaml (pointed at the local vault gateway),
# waits for Ready, shows the status and the synced value, then sets a new value in Key
# Vault and shows the Secret rotating and the Rotated Event.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
cd "$repo_root"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$repo_root/hack/testenv-up.sh"
# shellcheck source=/dev/null
source "$state_dir/env.sh"
cargo build --quiet --bin vaultsync

# Key Vault's REST API, as any client calls it: PUT /secrets/{name} sets a new version.
set_secret() { # set_secret NAME VALUE -> prints the new version id
  curl -fsS --cacert "$VAULTSYNC_TEST_CA_FILE" -H 'Authorization: Bearer demo' -H 'content-type: application/json' \
    -X PUT "$VAULTSYNC_TEST_EMULATOR_URL/secrets/$1?api-version=2025-07-01" \
    -d "$(python3 -c 'import json,sys; print(json.dumps({"value": sys.argv[1]}))' "$2")" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"].rsplit("/", 1)[1])'
}
synced_value() { kubectl get secret example-secret -o jsonpath='{.data.password}' | base64 -d; }

step "Install the VaultSecret CRD"
kubectl apply -f crds/vaultsecret.yaml
kubectl wait --for=condition=Established crd/vaultsecrets.vaultsync.io --timeout=60s >/dev/null

step "Seed the article's secret in Key Vault ($VAULTSYNC_TEST_KEYVAULT): ExampleSecret = MyAKSExampleSecret"
first_version=$(set_secret ExampleSecret MyAKSExampleSecret)
echo "ExampleSecret version $first_version"

step "Run the operator (log: $state_dir/logs/vaultsync.log)"
if ! component_alive vaultsync; then
  start_component vaultsync "$repo_root/target/debug/vaultsync" run --health-addr 127.0.0.1:0
fi
sleep 1
component_alive vaultsync || die "vaultsync exited at start-up (log: $state_dir/logs/vaultsync.log)"

step "Grant the operator's identity to namespace default (as a cluster administrator)"
# The example names no spec.identity: the operator reads with its own identity, which a
# namespace may use only when its Namespace grants it.
kubectl annotate namespace default vaultsync.io/operator-identity=allowed --overwrite
kubectl get namespace default -o jsonpath='{.metadata.annotations}' | python3 -m json.tool

step "Apply deploy/examples/vaultsecret.yaml (vaultUrl set to the local gateway, refresh every 10s)"
kubectl delete vsec example-secret --ignore-not-found --wait=true >/dev/null
manifest=$(sed -e "s#https://my-vault.vault.azure.net#$VAULTSYNC_TEST_VAULT_URL#" -e 's#refreshInterval: 1h#refreshInterval: 10s#' \
  deploy/examples/vaultsecret.yaml)
printf '%s\n' "$manifest"
printf '%s\n' "$manifest" | kubectl apply -f -

step "Wait for Ready"
if ! kubectl wait --for=condition=Ready vsec/example-secret --timeout=120s; then
  kubectl get vsec example-secret
  kubectl describe vsec example-secret | sed -n '/^Status:/,$p'
  die "the VaultSecret did not become Ready (see the status above and $state_dir/logs/vaultsync.log)"
fi
kubectl get vsec example-secret
kubectl get vsec example-secret -o jsonpath='{.status}' | python3 -m json.tool
first_value=$(synced_value)
printf 'Secret example-secret, key password: %s\n' "$first_value"

step "Rotate: set a new value in Key Vault"
second_version=$(set_secret ExampleSecret MyAKSExampleSecret-rotated)
echo "ExampleSecret version $second_version"
value=""
for _ in $(seq 1 90); do
  value=$(synced_value)
  [[ "$value" == "MyAKSExampleSecret-rotated" ]] && break
  sleep 1
done
[[ "$value" == "MyAKSExampleSecret-rotated" ]] || die "the Secret did not rotate (log: $state_dir/logs/vaultsync.log)"
printf 'Secret example-secret, key password: %s\n' "$value"
for _ in $(seq 1 20); do
  kubectl get events --field-selector involvedObject.name=example-secret,reason=Rotated -o name | grep -q . && break
  sleep 0.5
done
kubectl get events --field-selector involvedObject.name=example-secret

step "Summary"
cat <<SUMMARY
- Key Vault ($VAULTSYNC_TEST_KEYVAULT) held ExampleSecret = MyAKSExampleSecret (version $first_version).
- Namespace default was granted the operator's identity (annotation
  vaultsync.io/operator-identity=allowed); without it the VaultSecret is IdentityError.
- The operator read it as its own workload identity through the vault gateway and wrote
  Secret example-secret: password = $first_value.
- A new Key Vault version (MyAKSExampleSecret-rotated, $second_version) reached the Secret on the
  next refresh, with a Rotated Event naming both versions.

The environment and the operator stay up: source $state_dir/env.sh; \`make testenv-down\` stops both.
SUMMARY
