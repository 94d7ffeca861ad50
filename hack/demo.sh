#!/usr/bin/env bash
# `make demo`: the main job end to end on the local environment. Starts the environment,
# seeds the article's secret (ExampleSecret = MyAKSExampleSecret) in the Key Vault
# emulator through its REST API, runs the operator, grants its identity to namespace
# default, applies deploy/examples/vaultsecret.yaml (pointed at the local vault gateway),
# waits for Ready, shows the status and the synced value, runs a pod on the environment's
# node that reads it as an environment variable and as a mounted file (`kubectl exec`),
# then sets a new value in Key Vault and shows the Secret rotating, the Rotated Event, and
# a restarted pod reading the new value.
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
reader_pod() { # the article's pod: the Secret as env var EXAMPLE_SECRET and as files
  cat <<POD
apiVersion: v1
kind: Pod
metadata:
  name: secret-reader
  namespace: default
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: busybox
      image: $VAULTSYNC_TEST_BUSYBOX_IMAGE
      imagePullPolicy: Never   # imported into the node's containerd; nothing is pulled
      command: ["sleep", "3600"]
      env:
        - name: EXAMPLE_SECRET
          valueFrom: {secretKeyRef: {name: example-secret, key: password}}
      volumeMounts:
        - {name: secrets-store, mountPath: /mnt/secrets-store, readOnly: true}
  volumes:
    - name: secrets-store
      secret: {secretName: example-secret}
POD
}
run_reader() {
  kubectl delete pod secret-reader --ignore-not-found --wait=true >/dev/null
  reader_pod | kubectl apply -f -
  kubectl wait --for=condition=Ready pod/secret-reader --timeout=120s >/dev/null ||
    die "pod secret-reader did not start (kubectl describe pod secret-reader)"
  kubectl get pod secret-reader -o wide
  echo '$ kubectl exec secret-reader -- env | grep EXAMPLE_SECRET'
  kubectl exec secret-reader -- env | grep EXAMPLE_SECRET
  echo '$ kubectl exec secret-reader -- cat /mnt/secrets-store/password'
  kubectl exec secret-reader -- cat /mnt/secrets-store/password
  echo
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

step "A pod on the node reads ExampleSecret as an environment variable and as a file"
[[ -n "${VAULTSYNC_TEST_NODE:-}" ]] || die "the environment has no node (VAULTSYNC_TESTENV_NODE=off?)"
reader_pod
run_reader

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

step "Restart the pod: it reads the new value"
run_reader

step "Summary"
cat <<SUMMARY
- Key Vault ($VAULTSYNC_TEST_KEYVAULT) held ExampleSecret = MyAKSExampleSecret (version $first_version).
- Namespace default was granted the operator's identity (annotation
  vaultsync.io/operator-identity=allowed); without it the VaultSecret is IdentityError.
- The operator read it as its own workload identity through the vault gateway and wrote
  Secret example-secret: password = $first_value.
- Pod secret-reader on node $VAULTSYNC_TEST_NODE read it as env var EXAMPLE_SECRET and as file
  /mnt/secrets-store/password.
- A new Key Vault version (MyAKSExampleSecret-rotated, $second_version) reached the Secret on the
  next refresh, with a Rotated Event naming both versions; the restarted pod read the new
  value (a running pod's mounted file follows within the kubelet's sync period; its
  environment is fixed at start).

The environment and the operator stay up: source $state_dir/env.sh; \`make testenv-down\` stops both.
SUMMARY
