#!/usr/bin/env bash
# testenv-pod-relays.sh GATEWAY PORT...: for each PORT, relays connections to GATEWAY:PORT
# (the host's address on the pods' bridge) to 127.0.0.1:PORT, with socat, until stopped.
# Started by hack/testenv-node.sh as one component: stopping its process group stops
# every relay.
set -euo pipefail
gateway=$1
shift
for port in "$@"; do
  socat "TCP-LISTEN:$port,bind=$gateway,reuseaddr,fork" "TCP:127.0.0.1:$port" &
done
wait
