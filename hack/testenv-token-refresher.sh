#!/usr/bin/env bash
# Keeps the operator's federated token file fresh, as the kubelet does for a projected
# ServiceAccount token: a real TokenRequest, replaced atomically well before it expires.
set -uo pipefail
namespace=$1 service_account=$2 token_file=$3
while true; do
  if kubectl create token "$service_account" -n "$namespace" \
    --audience api://AzureADTokenExchange --duration 1h >"$token_file.tmp"; then
    mv "$token_file.tmp" "$token_file"
    sleep 600
  else
    sleep 5
  fi
done
