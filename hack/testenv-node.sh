#!/usr/bin/env bash
# testenv-node.sh gateway | up BIN_DIR API_PORT GATEWAY [FORWARDED_PORT...] | down
# The local environment's node, so that pods really run: containerd (Debian's, with runc
# and the CNI plugins), kube-scheduler and a kubelet registered as node `testenv-node`.
# `gateway` prints the host's address on the pods' bridge (a /24 of 10.244.0.0/16 that no
# route of the host uses yet; testenv-up.sh puts it in the serving certificate); `up`
# forwards each FORWARDED_PORT on that address to the same port on 127.0.0.1 (the API
# server and the Azure doubles listen on loopback alone), so that pods on their own network
# reach them as they would a cluster's API server and Azure: no host network needed.
# Sourced state: hack/lib.sh (state_dir, start_component, ...); the API server and the
# PKI of hack/testenv-up.sh must exist for `up`.
#
# Everything it can keep under "$state_dir/node" stays there: containerd's root, state
# and socket, runc's state, the network namespaces, the kubelet's root, pod logs and
# volume plugin dir, the CNI configuration and IP allocations. The host-global things
# it cannot relocate are named so that they are this environment's alone, recorded, and
# undone by `down`:
#   - the cgroup parent of every pod (cgroupRoot /vaultsync-<id> in each hierarchy);
#   - the pods' bridge (vs<id>), its address (the gateway) and its veths, and the relays
#     (socat) on that address;
#   - libcni's result cache (/var/lib/cni/results/vaultsync-<id>-*);
#   - the kubelet's /var/log/containers links (hard-coded there), pointing into the state;
#   - containerd shims' sockets in /run/containerd/s (hard-coded in containerd 1.6);
#   - the kubelet's device plugin socket /var/lib/kubelet/device-plugins/kubelet.sock
#     (hard-coded whatever the root dir): two nodes on one host would share it;
#   - those directories themselves, removed again when this environment created them and
#     they are empty;
#   - /etc/hosts, only where the host's name does not resolve to 127.0.0.1: a line
#     marked with this environment's id is added;
#   - the kernel tunables the kubelet sets (vm.overcommit_memory, vm.panic_on_oom,
#     kernel.panic, kernel.panic_on_oops, kernel.keys.root_maxkeys/_maxbytes) and
#     net.ipv4.ip_forward: their values before are recorded and written back.
# The packages it installs when missing stay installed.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/lib.sh"

node_dir="$state_dir/node"
# A short id of this environment names its host-global things (a bridge name has at
# most 15 characters).
env_id=$(printf '%s' "$state_dir" | sha256sum | cut -c1-8)
# The node is this host under its own name: the API server reaches the kubelet by the
# node's Hostname address (the kubelet listens on loopback, and refuses a loopback
# InternalIP), so that name must resolve to 127.0.0.1.
node_name=$(hostname | tr '[:upper:]' '[:lower:]')
hosts_mark="# vaultsync-testenv $env_id"
bridge="vs$env_id"
cni_network="vaultsync-$env_id"
cgroup_root="/vaultsync-$env_id"
# The bridge's /24s: one per environment on this host, so that their routes never overlap.
pod_net_prefix=10.244
containerd_socket="$node_dir/containerd/containerd.sock"
host_dirs=(/var/lib/kubelet /var/lib/kubelet/device-plugins /run/containerd /run/containerd/s
  /var/lib/cni /var/lib/cni/results /var/log/containers)
tunables=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)

# The cgroup v1 hierarchies (and the v2 one, where mounted) the kubelet and runc use.
cgroup_mounts() {
  awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/mounts
}

# The gateway address for a new environment: a /24 of $pod_net_prefix.0.0/16 that no
# address or route of the host covers yet, starting from one derived from the id so that
# environments started at the same time rarely try the same one.
gateway() {
  local used start n i
  used=$( { ip -4 -o addr show; ip -4 route show; } 2>/dev/null)
  start=$((16#${env_id:0:4} % 254 + 1))
  for ((i = 0; i < 254; i++)); do
    n=$(((start + i - 1) % 254 + 1))
    if ! grep -qE "(^| )${pod_net_prefix//./\\.}\\.$n\\." <<<"$used"; then
      echo "$pod_net_prefix.$n.1"
      return 0
    fi
  done
  die "no free /24 in $pod_net_prefix.0.0/16 for the pods' bridge"
}

up() {
  local bin_dir=$1 api_port=$2 gateway=$3
  shift 3
  local forwarded_ports=("$@")
  local pki="$state_dir/pki" kubeconfig="$state_dir/kubeconfig"
  local subnet="${gateway%.*}.0/24"

  # --- packages ---------------------------------------------------------------------------
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  [[ -x /bin/busybox ]] || missing+=(busybox-static)
  command -v socat >/dev/null || missing+=(socat)
  if ((${#missing[@]})); then
    say "installing ${missing[*]} from Debian"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" \
      >"$state_dir/logs/apt.log" 2>&1 || die "apt-get install ${missing[*]} failed (log: $state_dir/logs/apt.log)"
  fi

  mkdir -p "$node_dir"
  echo "$bin_dir" >"$node_dir/bin-dir"
  mkdir -p "$node_dir"/{containerd/root,containerd/state,containerd/runc,containerd/opt,cni/net.d,cni/networks} \
    "$node_dir"/{kubelet,pod-logs,volume-plugins}

  # --- host state before ------------------------------------------------------------------
  if [[ ! -f "$node_dir/host-sysctls" ]]; then
    for t in "${tunables[@]}"; do echo "$t $(sysctl -n "$t")"; done >"$node_dir/host-sysctls"
  fi
  if [[ ! -f "$node_dir/host-dirs-created" ]]; then
    local d
    for d in "${host_dirs[@]}"; do [[ -e "$d" ]] || echo "$d"; done >"$node_dir/host-dirs-created"
  fi
  local m
  for m in $(cgroup_mounts); do
    mkdir -p "$m$cgroup_root"
  done

  if [[ "$(getent ahostsv4 "$node_name" 2>/dev/null | awk 'NR == 1 {print $1}')" != 127.0.0.1 ]]; then
    say "mapping $node_name to 127.0.0.1 in /etc/hosts"
    echo "127.0.0.1 $node_name $hosts_mark" >>/etc/hosts
  fi

  # --- images -----------------------------------------------------------------------------
  local images busybox_name busybox_archive pause_name pause_archive
  images=$("$repo_root/hack/testenv-images.sh") || die "the node's images could not be built"
  read -r busybox_name busybox_archive < <(sed -n 1p <<<"$images")
  read -r pause_name pause_archive < <(sed -n 2p <<<"$images")

  # --- containerd -------------------------------------------------------------------------
  cat >"$node_dir/containerd/config.toml" <<TOML
version = 2
root = "$node_dir/containerd/root"
state = "$node_dir/containerd/state"
[grpc]
  address = "$containerd_socket"
[ttrpc]
  address = "$containerd_socket.ttrpc"
[debug]
  address = ""
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$node_dir/containerd/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "$pause_name"
    # This VM lacks CAP_SYS_RESOURCE: without it every sandbox fails with "can't get
    # final child's PID from pipe: EOF".
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_cdi = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$node_dir/cni/net.d"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
          Root = "$node_dir/containerd/runc"
TOML
  say "starting containerd $(containerd --version | awk '{print $3}') ($containerd_socket)"
  start_component containerd containerd --config "$node_dir/containerd/config.toml"
  wait_healthy containerd 30 ctr --address "$containerd_socket" version
  local archive
  for archive in "$busybox_archive" "$pause_archive"; do
    ctr --address "$containerd_socket" -n k8s.io images import --snapshotter overlayfs "$archive" \
      >>"$state_dir/logs/images.log" 2>&1 || die "ctr images import $archive failed (log: $state_dir/logs/images.log)"
  done

  # --- CNI: a bridge of this environment's own, with the gateway as the host's address ---
  # Pods reach the host's address on the bridge and nothing else: no default route, no
  # masquerading, no iptables rule. The bridge exists before any pod so that the relays
  # can listen on its address; the bridge plugin finds it with that address and keeps it.
  ip link show "$bridge" >/dev/null 2>&1 || ip link add "$bridge" type bridge ||
    die "could not create the pods' bridge $bridge"
  ip -4 addr show dev "$bridge" | grep -qF " $gateway/24 " || ip addr add "$gateway/24" dev "$bridge" ||
    die "could not give $bridge the address $gateway/24"
  ip link set "$bridge" up
  cat >"$node_dir/cni/net.d/10-vaultsync.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "$cni_network",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$node_dir/cni/networks",
        "ranges": [[{"subnet": "$subnet", "gateway": "$gateway"}]]
      }
    },
    {"type": "loopback"}
  ]
}
JSON
  # The relays: GATEWAY:PORT -> 127.0.0.1:PORT for the API server and the Azure doubles,
  # bytes as they are (TLS ends at the service: the serving certificate names the gateway).
  if ((${#forwarded_ports[@]})); then
    say "relaying ${forwarded_ports[*]} from $gateway (the pods' gateway) to 127.0.0.1"
    start_component testenv-pod-relays "$repo_root/hack/testenv-pod-relays.sh" "$gateway" "${forwarded_ports[@]}"
    local port
    for port in "${forwarded_ports[@]}"; do
      wait_healthy testenv-pod-relays 30 bash -c "ss -Hltn 'sport = :$port' | grep -qF '$gateway:$port'"
    done
  fi

  # --- kube-scheduler -----------------------------------------------------------------------
  local scheduler_port kubelet_port healthz_port
  read -r scheduler_port kubelet_port healthz_port <<<"$(free_ports 3)"
  say "starting kube-scheduler"
  start_component kube-scheduler "$bin_dir/kube-scheduler" \
    --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$scheduler_port" \
    --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" --leader-elect=false
  wait_healthy kube-scheduler 60 curl -fsS --cacert "$pki/ca.crt" "https://127.0.0.1:$scheduler_port/healthz"

  # --- kubelet ------------------------------------------------------------------------------
  cat >"$node_dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $kubelet_port
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
readOnlyPort: 0
containerRuntimeEndpoint: unix://$containerd_socket
# cgroup v1 on this machine: 1.36 refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
failSwapOn: false
# No iptables rules on the host: nothing here needs the kubelet's chains.
makeIPTablesUtilChains: false
# Secret volumes refresh on this period (default about a minute): short, for rotation.
syncFrequency: 10s
podLogsDir: $node_dir/pod-logs
volumePluginDir: $node_dir/volume-plugins
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: AlwaysAllow}
tlsCertFile: $pki/serving.crt
tlsPrivateKeyFile: $pki/serving.key
serializeImagePulls: false
# Tests fill the disk with nothing; the defaults would evict on a nearly full disk.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
resolvConf: /etc/resolv.conf
YAML
  say "starting kubelet as node $node_name"
  start_component kubelet "$bin_dir/kubelet" --config "$node_dir/kubelet.yaml" --kubeconfig "$kubeconfig" \
    --root-dir "$node_dir/kubelet" --hostname-override "$node_name"
  wait_healthy kubelet 120 kubectl wait --for=condition=Ready "node/$node_name" --timeout=2s

  cat >"$node_dir/env.sh" <<ENV
export VAULTSYNC_TEST_NODE='$node_name'
export VAULTSYNC_TEST_BUSYBOX_IMAGE='$busybox_name'
export VAULTSYNC_TEST_CONTAINERD_ADDRESS='$containerd_socket'
export VAULTSYNC_TEST_API_PORT='$api_port'
# Pods reach the API server and the Azure doubles here, at their loopback ports.
export VAULTSYNC_TEST_POD_GATEWAY='$gateway'
ENV
}

down() {
  [[ -d "$node_dir" ]] || return 0
  # Pods first, through the kubelet, so that it unmounts their volumes and the runtime
  # tears down their sandboxes (CNI DEL) as it would on a real node.
  if component_alive kubelet && component_alive kube-apiserver; then
    KUBECONFIG="$state_dir/kubeconfig" timeout 30 "$(cat "$node_dir/bin-dir")/kubectl" delete pods --all-namespaces \
      --field-selector "spec.nodeName=$node_name" --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 30))
    while ((SECONDS < deadline)) && [[ -n "$(ctr --address "$containerd_socket" -n k8s.io tasks ls -q 2>/dev/null)" ]]; do
      sleep 0.5
    done
  fi
  stop_component kubelet
  stop_component kube-scheduler
  # What the kubelet did not stop in time: kill and delete the tasks, so that their shims
  # exit and remove their sockets.
  if component_alive containerd; then
    local task
    for task in $(ctr --address "$containerd_socket" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$containerd_socket" -n k8s.io tasks kill -s SIGKILL --all "$task" >/dev/null 2>&1 || true
    done
    for task in $(ctr --address "$containerd_socket" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr --address "$containerd_socket" -n k8s.io tasks delete -f "$task" >/dev/null 2>&1 || true
    done
  fi
  stop_component containerd
  stop_component testenv-pod-relays

  # Whatever still runs: shims started for this containerd (they name its socket on their
  # command line) and processes in this environment's cgroups.
  local pid cmdline m
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    cmdline=$({ tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null) || continue
    if [[ "$cmdline" == containerd-shim* && "$cmdline" == *" -address $containerd_socket "* ]]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  for m in $(cgroup_mounts); do
    [[ -d "$m$cgroup_root" ]] || continue
    for pid in $(find "$m$cgroup_root" -name cgroup.procs -exec cat {} + 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done

  # Mounts under the state: secret volumes, rootfs overlays, sandbox shm, netns.
  local mounts mount_point
  for _ in 1 2 3; do
    mapfile -t mounts < <(awk -v d="$node_dir/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    ((${#mounts[@]})) || break
    for mount_point in "${mounts[@]}"; do
      umount "$mount_point" 2>/dev/null || umount -l "$mount_point" 2>/dev/null || true
    done
  done

  ip link delete "$bridge" >/dev/null 2>&1 || true
  rm -f /var/lib/cni/results/"$cni_network"-* 2>/dev/null || true
  local link
  for link in /var/log/containers/*.log; do
    [[ -L "$link" && "$(readlink "$link")" == "$node_dir/"* ]] && rm -f "$link"
  done
  for m in $(cgroup_mounts); do
    [[ -d "$m$cgroup_root" ]] || continue
    # Deepest first; a cgroup whose last process is still exiting refuses at first.
    for _ in 1 2 3 4 5; do
      find "$m$cgroup_root" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [[ -d "$m$cgroup_root" ]] || break
      sleep 0.2
    done
  done
  # The device plugin socket, unless another kubelet on this host serves it now.
  if ! pgrep -x kubelet >/dev/null; then
    rm -f /var/lib/kubelet/device-plugins/kubelet.sock
  fi
  if [[ -f "$node_dir/host-dirs-created" ]]; then
    local d
    # Deepest first; a directory someone else uses now is not empty and stays.
    for d in $(sort -r "$node_dir/host-dirs-created"); do rmdir "$d" 2>/dev/null || true; done
  fi
  if grep -qF "$hosts_mark" /etc/hosts; then
    # In place: /etc/hosts may be a bind mount that a rename would not replace.
    local kept
    kept=$(grep -vF "$hosts_mark" /etc/hosts)
    printf '%s\n' "$kept" >/etc/hosts
  fi
  if [[ -f "$node_dir/host-sysctls" ]]; then
    local name value
    while read -r name value; do
      sysctl -qw "$name=$value" 2>/dev/null || say "could not restore $name=$value"
    done <"$node_dir/host-sysctls"
  fi
  rm -rf "$node_dir" 2>/dev/null || true
  [[ ! -d "$node_dir" ]] || say "could not remove all of $node_dir"
}

case "${1:-}" in
  gateway) gateway ;;
  up) shift; up "$@" ;;
  down) down ;;
  *) echo "usage: testenv-node.sh gateway | up BIN_DIR API_PORT GATEWAY [FORWARDED_PORT...] | down" >&2; exit 2 ;;
esac
