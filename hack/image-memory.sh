#!/usr/bin/env bash
# hack/image-memory.sh [N]: the operator's resident memory in its image with N (default
# 100) VaultSecrets synced. Installs the chart (one replica, the image `make image`
# imported into the node) in a namespace of its own on the local environment, gives its
# ServiceAccount a federated identity, creates N VaultSecrets over 10 Key Vault secrets,
# waits until all are Ready, and prints the container process's VmRSS and VmHWM from
# /proc. Removes what it created. A measurement, not a test: nothing is asserted.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
cd "$repo_root"
n=${1:-100}
[[ -f "$state_dir/env.sh" ]] || die "the local environment is not up (make testenv-up), or has no node"
# shellcheck source=/dev/null
source "$state_dir/env.sh"
[[ -n "${VAULTSYNC_TEST_POD_GATEWAY:-}" ]] || die "the local environment has no node"
helm=$("$repo_root/hack/build-helm.sh")
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
ctr --address "$VAULTSYNC_TEST_CONTAINERD_ADDRESS" -n k8s.io images ls -q | grep -qx "docker.io/library/vaultsync:$version" ||
  die "vaultsync:$version is not in the node's containerd: run make image"

ns="vs-memory-$(python3 -c 'import uuid; print(uuid.uuid4().hex[:8])')"
release=vaultsync
gateway=$VAULTSYNC_TEST_POD_GATEWAY
vault_url=${VAULTSYNC_TEST_VAULT_URL/127.0.0.1/$gateway}
authority=${AZURE_AUTHORITY_HOST/127.0.0.1/$gateway}
client_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
cleanup() {
  "$helm" uninstall "$release" --namespace "$ns" >/dev/null 2>&1 || true
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT

kubectl create namespace "$ns" >/dev/null
kubectl annotate namespace "$ns" vaultsync.io/operator-identity=allowed >/dev/null
kubectl create configmap testenv-ca -n "$ns" --from-file=ca.crt="$VAULTSYNC_TEST_CA_FILE" >/dev/null
admin_put() { curl -fsS -X PUT -H 'content-type: application/json' --data "$2" "$VAULTSYNC_TEST_AZURE_ADMIN_URL$1" >/dev/null; }
admin_put "/federated-credentials/$client_id" "{\"subjects\":[\"system:serviceaccount:$ns:$release\"]}"
admin_put "/access/$client_id" '{"secrets":["*"]}'
for i in $(seq 0 9); do
  curl -fsS --cacert "$VAULTSYNC_TEST_CA_FILE" -X PUT -H 'authorization: Bearer seed' -H 'content-type: application/json' \
    --data "{\"value\":\"memory-$i\"}" "$VAULTSYNC_TEST_EMULATOR_URL/secrets/$ns-$i?api-version=7.6" >/dev/null
done

"$helm" install "$release" deploy/charts/vaultsync --namespace "$ns" --wait --timeout 120s \
  --set image.pullPolicy=Never --set replicas=1 --set "watchNamespaces={$ns}" \
  --set operatorIdentity.workloadIdentity.injectedByWebhook=false \
  --set "operatorIdentity.clientId=$client_id" --set "operatorIdentity.tenantId=$AZURE_TENANT_ID" \
  --set "operatorIdentity.workloadIdentity.authorityHost=$authority" \
  --set extraCA.configMap.name=testenv-ca --set "extraVaultSuffixes={$gateway}" \
  --set-json "extraEnv=[{\"name\":\"VAULTSYNC_SKIP_CHALLENGE_VERIFICATION_FOR\",\"value\":\"${vault_url#https://}\"},{\"name\":\"KUBERNETES_SERVICE_HOST\",\"value\":\"$gateway\"},{\"name\":\"KUBERNETES_SERVICE_PORT\",\"value\":\"$VAULTSYNC_TEST_API_PORT\"}]" \
  >/dev/null

for i in $(seq 1 "$n"); do
  cat <<YAML
---
apiVersion: vaultsync.io/v1alpha1
kind: VaultSecret
metadata: {name: memory-$i, namespace: $ns}
spec:
  vaultUrl: $vault_url
  data: [{key: value, remoteRef: {name: $ns-$((i % 10))}}]
YAML
done | kubectl apply -f - >/dev/null
kubectl wait vaultsecrets --all -n "$ns" --for=condition=Ready --timeout=300s >/dev/null ||
  die "not every VaultSecret became Ready"

container=$(kubectl get pods -n "$ns" -l "app.kubernetes.io/instance=$release" \
  -o jsonpath='{.items[0].status.containerStatuses[0].containerID}')
container=${container#containerd://}
pid=$(ctr --address "$VAULTSYNC_TEST_CONTAINERD_ADDRESS" -n k8s.io tasks ls | awk -v id="$container" '$1 == id {print $2}')
[[ -n "$pid" ]] || die "no task for container $container"
echo "$n VaultSecrets Ready; the operator's container process (pid $pid):"
grep -E '^(VmRSS|VmHWM):' "/proc/$pid/status"
