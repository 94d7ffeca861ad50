# Shared by the hack/testenv-*.sh scripts. Sourced, not run.
# shellcheck shell=bash

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=hack/versions.env
source "$repo_root/hack/versions.env"
cache_root=${VAULTSYNC_CACHE:-$HOME/.cache/vaultsync}
state_dir=${VAULTSYNC_TESTENV_DIR:-$repo_root/.testenv}

say() { echo "testenv: $*" >&2; }
die() { echo "testenv: ERROR: $*" >&2; exit 1; }

# Free loopback ports, all bound at once so that none is handed out twice.
free_ports() {
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

# A process started by start_component is the leader of its own session, so stopping its
# process group stops its children too. The pid file records pid and name; the name is
# checked against /proc before any signal, so a reused pid is never killed.
#
# The command line is kept in cmds/NAME.cmd (and the health check in cmds/NAME.health by
# wait_healthy), so that hack/testenv-restart.sh can start the component again with the
# same ports, flags and state. A restart appends to the log rather than truncating it.
start_component() {
  local name=$1
  shift
  mkdir -p "$state_dir/pids" "$state_dir/logs" "$state_dir/cmds"
  printf '%q ' "$@" >"$state_dir/cmds/$name.cmd"
  setsid "$@" >>"$state_dir/logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid $name" >"$state_dir/pids/$name.pid"
  # Until the forked shell has exec'd the program, /proc shows the shell's command line
  # and component_alive would call the component dead.
  for _ in $(seq 1 100); do
    [[ -d "/proc/$pid" ]] || break
    [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" != *"$name"* ]] || break
    sleep 0.05
  done
}

component_alive() {
  local pid_file="$state_dir/pids/$1.pid" pid name
  [[ -f "$pid_file" ]] || return 1
  read -r pid name <"$pid_file"
  [[ -n "$pid" && -d "/proc/$pid" ]] || return 1
  # A zombie or a different program under a reused pid does not count.
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]] || return 1
  [[ "$(cat "/proc/$pid/cmdline" 2>/dev/null | tr '\0' ' ')" == *"$name"* ]]
}

# Stops a component started by start_component: TERM to its process group, KILL after
# 10 seconds.
stop_component() {
  local name=$1 pid
  component_alive "$name" || return 0
  read -r pid _ <"$state_dir/pids/$name.pid"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    component_alive "$name" || break
    sleep 0.25
  done
  if component_alive "$name"; then
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state_dir/pids/$name.pid"
}

# wait_healthy NAME SECONDS CMD...: polls CMD until it succeeds; fails naming the
# component, with the end of its log, if the process dies or the time runs out.
wait_healthy() {
  local name=$1 seconds=$2
  shift 2
  mkdir -p "$state_dir/cmds"
  printf '%q ' "$@" >"$state_dir/cmds/$name.health"
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ! component_alive "$name"; then
      tail -n 30 "$state_dir/logs/$name.log" >&2 || true
      die "$name exited during start-up (log: $state_dir/logs/$name.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$state_dir/logs/$name.log" >&2 || true
      die "$name did not become healthy within ${seconds}s (log: $state_dir/logs/$name.log)"
    fi
    sleep 0.5
  done
  say "$name is healthy"
}

# For one command (make test, make bench): start the environment, stop it again on exit
# when this command started it (always in CI), and load env.sh.
use_testenv() {
  local was_up=false
  [[ -f "$state_dir/env.sh" ]] && was_up=true
  "$repo_root/hack/testenv-up.sh"
  if ! $was_up || [[ -n "${CI:-}" ]]; then
    trap '"$repo_root/hack/testenv-down.sh"' EXIT
  fi
  # The demo's operator watches every namespace and would reconcile the tests' objects.
  if component_alive vaultsync; then
    say "stopping the operator that make demo started"
    stop_component vaultsync
  fi
  # shellcheck source=/dev/null
  source "$state_dir/env.sh"
}

# The operator's release binary, linked statically against glibc (crt-static; no musl
# target is installed here; glibc 2.34 and later resolve names through /etc/hosts and DNS
# without loading NSS modules, so it resolves in an empty image). One build serves the
# image (hack/image.sh) and the benchmark (hack/bench.sh). --target keeps crt-static off
# build scripts and proc macros, which must stay dynamic. Prints the binary's path.
build_static_release() {
  local triple=x86_64-unknown-linux-gnu
  say "building the release binary (static, $triple)"
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --target "$triple" --bin vaultsync >&2
  local binary="$repo_root/target/$triple/release/vaultsync"
  file -L "$binary" | grep -Eq 'statically linked|static-pie linked' ||
    die "$binary is not statically linked: $(file -L "$binary")"
  echo "$binary"
}
