#!/usr/bin/env bash
# Benchmarks the room embedded in one server, on one node over NATS, and on
# three nodes over NATS, with the same bench command each time, and prints
# the CPU time each process used (the nodes, nats-server, the bench).
#
# Usage: scripts/cluster-bench.sh [embedded|nats1|nats3]... -- [BENCH OPTIONS]
#   e.g. scripts/cluster-bench.sh embedded nats1 nats3 -- --scenario fanout
# Needs: nats-server (Debian/Ubuntu: apt-get install nats-server).
# Everything stays on 127.0.0.1; every server started here is stopped by its
# PID at the end, and the bench bounds each scenario (--timeout).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${CHATROOM_BIN:-$repo/target/release/chatroom}
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats_bin" ] || { echo "nats-server is not installed (apt-get install nats-server)" >&2; exit 2; }
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 2; }

setups=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do setups+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
bench_args=("$@")
[ ${#setups[@]} -gt 0 ] || setups=(embedded nats1 nats3)
[ ${#bench_args[@]} -gt 0 ] || bench_args=(--scenario fanout)

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
(cd "$work" && "$bin" gen-certs >/dev/null)

# Waits (at most 10 s) until FILE contains PATTERN.
wait_for() {
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1" >&2; exit 1
}

# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

run_setup() {
  local setup=$1 nodes=0 port=$((24000 + RANDOM % 1000)) addrs="" node_pids=() nats_pid=""
  case "$setup" in
    embedded) nodes=1 ;;
    nats1) nodes=1 ;;
    nats3) nodes=3 ;;
    *) echo "unknown setup $setup" >&2; exit 2 ;;
  esac
  local cluster=()
  if [ "$setup" != embedded ]; then
    rm -rf "$work/js"
    "$nats_bin" -js -a 127.0.0.1 -p "$port" -sd "$work/js" >"$work/nats.log" 2>&1 &
    nats_pid=$!; pids+=("$nats_pid")
    wait_for "$work/nats.log" "Server is ready"
    cluster=(--cluster "nats://127.0.0.1:$port" --cluster-room "bench$RANDOM")
  fi
  for i in $(seq "$nodes"); do
    (cd "$work" && exec "$bin" serve --addr 127.0.0.1:0 --rate-limit off \
      ${cluster[@]+"${cluster[@]}"} ${cluster[@]+--node-name n$i}) >"$work/node$i.log" 2>&1 &
    node_pids+=($!); pids+=($!)
    wait_for "$work/node$i.log" "listening addr="
    addrs+="${addrs:+,}$(sed -n 's/.*listening addr=\([^ ]*\).*/\1/p' "$work/node$i.log" | head -1)"
  done
  local before=() after=() nats_before="" bench_log="$work/bench.txt"
  for p in "${node_pids[@]}"; do before+=("$(cpu "$p")"); done
  [ -n "$nats_pid" ] && nats_before=$(cpu "$nats_pid")
  echo "== $setup: $nodes node(s) at $addrs"
  local t0; t0=$(date +%s.%N)
  "$bin" bench --addr "$addrs" --ca "$work/certs/ca.pem" --server-pid "${node_pids[0]}" \
    "${bench_args[@]}" | tee "$bench_log"
  local t1; t1=$(date +%s.%N)
  for p in "${node_pids[@]}"; do after+=("$(cpu "$p")"); done
  printf 'wall %s s; CPU s:' "$(minus "$t1" "$t0")"
  for i in "${!node_pids[@]}"; do
    printf ' node%d %s' "$((i + 1))" "$(minus "${after[$i]}" "${before[$i]}")"
  done
  [ -n "$nats_pid" ] && printf ' nats-server %s' "$(minus "$(cpu "$nats_pid")" "$nats_before")"
  echo
  for p in "${node_pids[@]}" $nats_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
}

for setup in "${setups[@]}"; do run_setup "$setup"; done
