#!/usr/bin/env bash
# `make demo`: starts the local environment and walks through the identity chain the
# operator uses: a ServiceAccount token from the API server, exchanged at the Entra
# double for a Key Vault token, presented to the vault gateway.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"
"$repo_root/hack/testenv-up.sh"
# shellcheck source=/dev/null
source "$state_dir/env.sh"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "kube-apiserver: kubectl get --raw /readyz"
kubectl get --raw /readyz; echo
step "The operator's ServiceAccount token (claims only; the token itself is never printed)"
python3 - "$AZURE_FEDERATED_TOKEN_FILE" <<'PY'
import base64, json, sys
payload = open(sys.argv[1]).read().split(".")[1]
claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
print(json.dumps({k: claims[k] for k in ("iss", "aud", "sub", "exp")}, indent=2))
PY
step "Exchange it at the Entra token endpoint for a Key Vault token"
access_token=$(curl -fsS --cacert "$VAULTSYNC_TEST_CA_FILE" "$AZURE_AUTHORITY_HOST/$AZURE_TENANT_ID/oauth2/v2.0/token" \
  -d client_id="$AZURE_CLIENT_ID" -d grant_type=client_credentials -d scope=https://vault.azure.net/.default \
  -d client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer \
  --data-urlencode client_assertion@"$AZURE_FEDERATED_TOKEN_FILE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
echo "access token issued for client id $AZURE_CLIENT_ID"
step "Key Vault gateway without a token: the challenge"
curl -sS -o /dev/null -D - --cacert "$VAULTSYNC_TEST_CA_FILE" "$VAULTSYNC_TEST_VAULT_URL/secrets/ExampleSecret/?api-version=7.6" | grep -i -E '^(HTTP|www-authenticate)'
step "Key Vault gateway with the token"
curl -sS --cacert "$VAULTSYNC_TEST_CA_FILE" -H "Authorization: Bearer $access_token" "$VAULTSYNC_TEST_VAULT_URL/secrets/ExampleSecret/?api-version=7.6"; echo
step "Request counts from the doubles' admin API"
curl -fsS "$VAULTSYNC_TEST_AZURE_ADMIN_URL/stats"; echo
printf '\nThe environment stays up: source %s, and `make testenv-down` when done.\n' "$state_dir/env.sh"
