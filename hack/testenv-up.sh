#!/usr/bin/env bash
# Starts the local environment on loopback: etcd, kube-apiserver, kube-controller-manager,
# the Azure test doubles (Entra, managed identity, the vault gateway) and the Key Vault
# emulator; writes .testenv/env.sh. Idempotent: a healthy environment is left as it is.
#
# With the node (on unless VAULTSYNC_TESTENV_NODE=off): kube-scheduler, containerd and a
# kubelet, so that pods run (hack/testenv-node.sh).
#
# The Key Vault backend is the project's own emulator (three vaults served by the doubles
# binary), or lowkey-vault with VAULTSYNC_TEST_KEYVAULT=lowkey-vault when its jar can be
# fetched into the cache.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

operator_namespace=vaultsync-system
operator_service_account=vaultsync
components=(etcd kube-apiserver kube-controller-manager azure-doubles testenv-token-refresher)
keyvault_backend=${VAULTSYNC_TEST_KEYVAULT:-emulator}
node=${VAULTSYNC_TESTENV_NODE:-on}
case "$node" in
  on) components+=(containerd kube-scheduler kubelet) ;;
  off) ;;
  *) die "VAULTSYNC_TESTENV_NODE must be 'on' or 'off', not '$node'" ;;
esac
case "$keyvault_backend" in
  emulator) ;;
  lowkey-vault) components+=(lowkey-vault) ;;
  *) die "VAULTSYNC_TEST_KEYVAULT must be 'emulator' or 'lowkey-vault', not '$keyvault_backend'" ;;
esac

if [[ -f "$state_dir/env.sh" ]]; then
  healthy=true
  for c in "${components[@]}"; do component_alive "$c" || healthy=false; done
  # An env.sh from before the per-host vault flags would start operators that refuse
  # the environment's vaults: such an environment is restarted.
  # An environment without recorded command lines cannot restart a component.
  [[ -f "$state_dir/cmds/kube-apiserver.cmd" ]] || healthy=false
  # shellcheck source=/dev/null
  if $healthy && (source "$state_dir/env.sh" && [[ "$VAULTSYNC_TEST_KEYVAULT" == "$keyvault_backend" ]] &&
    [[ -n "${VAULTSYNC_SKIP_CHALLENGE_VERIFICATION_FOR:-}" ]] &&
    { [[ "$node" == off ]] || [[ -n "${VAULTSYNC_TEST_NODE:-}" ]]; } &&
    kubectl get --raw /readyz >/dev/null 2>&1); then
    say "already up ($state_dir/env.sh)"
    exit 0
  fi
  say "a previous environment is partly down; restarting it"
fi
"$repo_root/hack/testenv-down.sh"

command -v openssl >/dev/null || die "openssl is not installed"
command -v python3 >/dev/null || die "python3 is not installed"
command -v curl >/dev/null || die "curl is not installed"

# --- binaries ---------------------------------------------------------------------------
build_flags=()
[[ "$node" == off ]] || build_flags+=(--node)
bin_dir=$("$repo_root/hack/build-kube.sh" "${build_flags[@]}") || die "the Kubernetes binaries could not be built (see the message above)"
say "building the Azure test doubles"
(cd "$repo_root" && cargo build --quiet -p vaultsync-azure-doubles) || die "azure-doubles could not be built"
doubles_bin="$repo_root/target/debug/azure-doubles"
lowkey_jar=""
if [[ "$keyvault_backend" == lowkey-vault ]]; then
  mkdir -p "$cache_root"
  lowkey_jar=$("$repo_root/hack/fetch-lowkey-vault.sh" 2>"$cache_root/lowkey-fetch.err") ||
    die "VAULTSYNC_TEST_KEYVAULT=lowkey-vault, but $(tail -n 1 "$cache_root/lowkey-fetch.err")"
fi
export PATH="$bin_dir:$PATH"

mkdir -p "$state_dir"/{pki,pids,logs,etcd-data,apiserver-certs}
pki="$state_dir/pki"

# --- PKI: one CA for every TLS endpoint and the admin client certificate -----------------
# With the node, pods reach the API server and the Azure doubles at the host's address on
# their bridge (hack/testenv-node.sh), which the serving certificate names too.
serving_names="DNS:localhost,IP:127.0.0.1"
if [[ "$node" == on ]]; then
  pod_gateway=$("$repo_root/hack/testenv-node.sh" gateway)
  serving_names+=",IP:$pod_gateway"
fi
say "generating the CA and certificates"
(
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
    -subj "/CN=vaultsync-testenv-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  issue() { # issue NAME SUBJECT EXTENSIONS
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
    printf '%b' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 -out "$1.crt" -extfile "$1.ext"
  }
  issue serving "/CN=localhost" \
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=$serving_names\n"
  issue admin "/O=system:masters/CN=vaultsync-testenv-admin" \
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
  # RS256 service-account signing key, the algorithm Entra accepts for federation.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
  openssl pkey -in sa.key -pubout -out sa.pub
  openssl pkcs12 -export -in serving.crt -inkey serving.key -certfile ca.crt -name lowkey-vault \
    -out lowkey-vault.p12 -passout pass:testenv
) >"$state_dir/logs/pki.log" 2>&1 || die "certificate generation failed (log: $state_dir/logs/pki.log)"

read -r etcd_port etcd_peer_port api_port kcm_port identity_port vault_port vault2_port admin_port \
  kv_port kv2_port kv_replay_port lowkey_port lowkey_token_port <<<"$(free_ports 13)"
api_url="https://127.0.0.1:$api_port"
kubeconfig="$state_dir/kubeconfig"
cat >"$kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: testenv
  cluster:
    server: $api_url
    certificate-authority: $pki/ca.crt
users:
- name: admin
  user:
    client-certificate: $pki/admin.crt
    client-key: $pki/admin.key
contexts:
- name: testenv
  context: {cluster: testenv, user: admin}
current-context: testenv
KUBECONFIG
export KUBECONFIG="$kubeconfig"

# --- etcd -------------------------------------------------------------------------------
say "starting etcd $ETCD_VERSION on 127.0.0.1:$etcd_port"
start_component etcd "$bin_dir/etcd" --name testenv --data-dir "$state_dir/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "testenv=http://127.0.0.1:$etcd_peer_port" --unsafe-no-fsync --log-level warn
wait_healthy etcd 60 curl -fsS "http://127.0.0.1:$etcd_port/health"

# --- kube-apiserver ---------------------------------------------------------------------
say "starting kube-apiserver $KUBERNETES_VERSION on $api_url"
start_component kube-apiserver "$bin_dir/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --cert-dir "$state_dir/apiserver-certs" --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
  --client-ca-file "$pki/ca.crt" --authorization-mode RBAC --anonymous-auth=true \
  --service-account-issuer "$api_url" \
  --service-account-signing-key-file "$pki/sa.key" --service-account-key-file "$pki/sa.pub" \
  --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
  --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key" \
  --kubelet-preferred-address-types Hostname
wait_healthy kube-apiserver 120 kubectl get --raw /readyz

# The token endpoint double, like Entra, reads the issuer's discovery document and JWKS
# without credentials.
kubectl create clusterrolebinding vaultsync-testenv-oidc-discovery \
  --clusterrole system:service-account-issuer-discovery --group system:unauthenticated >/dev/null

# --- kube-controller-manager ------------------------------------------------------------
say "starting kube-controller-manager"
start_component kube-controller-manager "$bin_dir/kube-controller-manager" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$kcm_port" \
  --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
  --leader-elect=false --use-service-account-credentials=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --controllers '*'
wait_healthy kube-controller-manager 90 curl -fsS --cacert "$pki/ca.crt" "https://127.0.0.1:$kcm_port/healthz"
# The ServiceAccount controller running is what makes `default` appear.
wait_healthy kube-controller-manager 90 kubectl get serviceaccount default -n default

# --- the node ---------------------------------------------------------------------------
if [[ "$node" == on ]]; then
  # Pods reach the API server, Entra and the managed-identity endpoint, and the two vault
  # gateways; the emulator itself and the admin endpoint stay the tests' own.
  "$repo_root/hack/testenv-node.sh" up "$bin_dir" "$api_port" "$pod_gateway" \
    "$api_port" "$identity_port" "$vault_port" "$vault2_port"
fi

# --- the operator's own identity ---------------------------------------------------------
kubectl create namespace "$operator_namespace" >/dev/null
kubectl create serviceaccount "$operator_service_account" -n "$operator_namespace" >/dev/null
token_file="$state_dir/operator-token"
start_component testenv-token-refresher "$repo_root/hack/testenv-token-refresher.sh" \
  "$operator_namespace" "$operator_service_account" "$token_file"
wait_healthy testenv-token-refresher 30 test -s "$token_file"

# --- lowkey-vault (optional second backend) ---------------------------------------------
if [[ "$keyvault_backend" == lowkey-vault ]]; then
  java_bin="$JAVA25_HOME/bin/java"
  [[ -x "$java_bin" ]] || die "lowkey-vault needs Java 25 at $JAVA25_HOME"
  say "starting lowkey-vault $LOWKEY_VAULT_VERSION on :$lowkey_port"
  start_component lowkey-vault "$java_bin" -jar "$lowkey_jar" \
    --server.port="$lowkey_port" --app.token.port="$lowkey_token_port" \
    --server.ssl.key-store="file:$pki/lowkey-vault.p12" --server.ssl.key-store-type=PKCS12 \
    --server.ssl.key-store-password=testenv --server.ssl.key-alias=lowkey-vault \
    --LOWKEY_VAULT_RELAXED_PORTS=true
  # Any HTTP answer (the 401 challenge) means it serves; curl prints 000 until then.
  wait_healthy lowkey-vault 180 bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' --cacert '$pki/ca.crt' 'https://localhost:$lowkey_port/secrets?api-version=7.6') != 000 ]]"
fi

# --- Azure test doubles -------------------------------------------------------------------
tenant_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
operator_client_id=$(python3 -c 'import uuid; print(uuid.uuid4())')
identity_header=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
# Vault 1 and vault 2 are what tests and the demo use, each behind its own gateway
# listener; a third emulator vault belongs to the recording replay alone, which empties it.
# lowkey-vault keeps one vault per host name, so `localhost` and `127.0.0.1` are two vaults
# there (the gateway forwards the client's Host header).
if [[ "$keyvault_backend" == emulator ]]; then
  emulator_url="https://127.0.0.1:$kv_port"
  emulator2_url="https://localhost:$kv2_port"
  replay_vault_url="https://127.0.0.1:$kv_replay_port"
  emulator_args=(--keyvault-listen "127.0.0.1:$kv_port" --keyvault-listen "127.0.0.1:$kv2_port" --keyvault-listen "127.0.0.1:$kv_replay_port")
else
  emulator_url="https://127.0.0.1:$lowkey_port"
  emulator2_url="https://localhost:$lowkey_port"
  replay_vault_url="https://127.0.0.1:$lowkey_port"
  emulator_args=()
fi
say "starting the Azure test doubles (identity :$identity_port, vault gateways :$vault_port :$vault2_port, admin :$admin_port, Key Vault: $keyvault_backend)"
AZURE_DOUBLES_IDENTITY_HEADER="$identity_header" start_component azure-doubles "$doubles_bin" \
  --identity-listen "127.0.0.1:$identity_port" --admin-listen "127.0.0.1:$admin_port" \
  --vault-listen "127.0.0.1:$vault_port" --upstream "$emulator_url" \
  --vault-listen "127.0.0.1:$vault2_port" --upstream "$emulator2_url" \
  "${emulator_args[@]}" \
  --tls-cert "$pki/serving.crt" --tls-key "$pki/serving.key" --ca-file "$pki/ca.crt" \
  --issuer "$api_url" --tenant-id "$tenant_id"
admin_url="http://127.0.0.1:$admin_port"
wait_healthy azure-doubles 30 curl -fsS "$admin_url/healthz"
# The emulator's first answer to a request without a token is the 401 challenge.
wait_healthy azure-doubles 30 bash -c "[[ \$(curl -s -o /dev/null -w '%{http_code}' --cacert '$pki/ca.crt' '$emulator_url/secrets?api-version=7.6') == 401 ]]"
admin_put() { curl -fsS -X PUT -H 'content-type: application/json' --data "$2" "$admin_url$1" >/dev/null; }
admin_put "/federated-credentials/$operator_client_id" \
  "{\"subjects\":[\"system:serviceaccount:$operator_namespace:$operator_service_account\"]}"
admin_put "/access/$operator_client_id" '{"secrets":["*"]}'

# --- env.sh -----------------------------------------------------------------------------
cat >"$state_dir/env.sh" <<ENV
# Written by hack/testenv-up.sh; source it to talk to the local environment.
export VAULTSYNC_TESTENV_DIR='$state_dir'
export KUBECONFIG='$kubeconfig'
export PATH='$bin_dir':"\$PATH"
# Key Vault: vault 1 and vault 2 through the gateway (tokens, access, faults, counts), the
# same vaults directly (seeding, as any Key Vault client would), and the replay's vault.
export VAULTSYNC_TEST_KEYVAULT='$keyvault_backend'
export VAULTSYNC_TEST_VAULT_URL='https://127.0.0.1:$vault_port'
export VAULTSYNC_TEST_VAULT2_URL='https://localhost:$vault2_port'
export VAULTSYNC_TEST_EMULATOR_URL='$emulator_url'
export VAULTSYNC_TEST_EMULATOR2_URL='$emulator2_url'
export VAULTSYNC_TEST_REPLAY_VAULT_URL='$replay_vault_url'
export VAULTSYNC_TEST_CA_FILE='$pki/ca.crt'
export VAULTSYNC_TEST_AZURE_ADMIN_URL='$admin_url'
export VAULTSYNC_TEST_SA_ISSUER='$api_url'
export VAULTSYNC_TEST_SA_SIGNING_KEY_FILE='$pki/sa.key'
export VAULTSYNC_TEST_OPERATOR_NAMESPACE='$operator_namespace'
export VAULTSYNC_TEST_OPERATOR_SERVICE_ACCOUNT='$operator_service_account'
export AZURE_AUTHORITY_HOST='https://127.0.0.1:$identity_port'
export AZURE_TENANT_ID='$tenant_id'
export AZURE_CLIENT_ID='$operator_client_id'
export AZURE_FEDERATED_TOKEN_FILE='$token_file'
export VAULTSYNC_EXTRA_CA_FILE='$pki/ca.crt'
# The operator calls only Key Vault hosts plus these suffixes, and skips the challenge
# resource check (which a loopback host can never pass) for the two gateways alone.
export VAULTSYNC_EXTRA_VAULT_SUFFIXES=127.0.0.1,localhost
export VAULTSYNC_SKIP_CHALLENGE_VERIFICATION_FOR='127.0.0.1:$vault_port,localhost:$vault2_port'
export IDENTITY_ENDPOINT='https://127.0.0.1:$identity_port/msi/token'
export IDENTITY_HEADER='$identity_header'
ENV
if [[ "$node" == on ]]; then
  echo "# The node (hack/testenv-node.sh): pods run on it." >>"$state_dir/env.sh"
  cat "$state_dir/node/env.sh" >>"$state_dir/env.sh"
fi
say "up: source $state_dir/env.sh"
