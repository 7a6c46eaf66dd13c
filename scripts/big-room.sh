#!/usr/bin/env bash
# Fills one room of TOTAL participants (default 50,000) on NODES `serve
# --cluster` nodes (default 3) over one fresh nats-server with JetStream,
# with one `chatroom bench --scenario big` process per node (each process,
# like each node, has its own open-files limit), then sends one line to
# everybody. Prints the participants, the time to fill, the memory per
# participant of each node, the time the line took to reach everybody and
# the CPU time of every process.
#
# Usage: [TOTAL=N] [NODES=N] [STALL_TIMEOUT=S] [TIMEOUT=S] [CHATROOM_BIN=path]
#          scripts/big-room.sh [BENCH OPTIONS]
#   e.g. TOTAL=3000 scripts/big-room.sh            (a small run)
#        scripts/big-room.sh --concurrency 50      (options for every bench)
# STALL_TIMEOUT (default 60) and TIMEOUT (default 900) are each bench's
# --stall-timeout and --timeout.
# Needs: nats-server and jq (Debian/Ubuntu: apt-get install nats-server jq).
# Everything stays on 127.0.0.1, which the nodes exempt from their
# per-address limits by default; the nodes run with their defaults except
# --rate-limit off. Every process started here is stopped by its PID at the
# end, and each bench bounds its run (--timeout).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${CHATROOM_BIN:-$repo/target/release/chatroom}
total=${TOTAL:-50000}
nodes=${NODES:-3}
stall=${STALL_TIMEOUT:-60}
limit=${TIMEOUT:-900}
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats_bin" ] || { echo "nats-server is not installed (apt-get install nats-server)" >&2; exit 2; }
command -v jq >/dev/null || { echo "jq is not installed (apt-get install jq)" >&2; exit 2; }
[ -x "$bin" ] || { echo "build first: cargo build --release (or set CHATROOM_BIN)" >&2; exit 2; }
case "$total$nodes" in *[!0-9]*) echo "TOTAL and NODES must be numbers" >&2; exit 2 ;; esac
[ "$nodes" -ge 1 ] && [ "$total" -ge "$nodes" ] || { echo "need TOTAL >= NODES >= 1" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
(cd "$work" && "$bin" gen-certs >/dev/null)

# Waits (at most 10 s) until FILE contains PATTERN.
wait_for() {
  for _ in $(seq 100); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; exit 1
}

# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }

port=$((24000 + RANDOM % 1000))
"$nats_bin" -js -a 127.0.0.1 -p "$port" -sd "$work/js" >"$work/nats.log" 2>&1 &
nats_pid=$!; pids+=("$nats_pid")
wait_for "$work/nats.log" "Server is ready"

room="big$RANDOM"
node_pids=() addrs=()
for i in $(seq "$nodes"); do
  (cd "$work" && exec "$bin" serve --addr 127.0.0.1:0 --rate-limit off \
    --cluster "nats://127.0.0.1:$port" --cluster-room "$room" --node-name "n$i") \
    >"$work/node$i.log" 2>&1 &
  node_pids+=($!); pids+=($!)
  wait_for "$work/node$i.log" "listening addr="
  addrs+=("$(sed -n 's/.*listening addr=\([^ ]*\).*/\1/p' "$work/node$i.log" | head -1)")
done

nats_before=$(cpu "$nats_pid")
node_before=()
for p in "${node_pids[@]}"; do node_before+=("$(cpu "$p")"); done

# Node i gets clients [first, first + count): the total split as evenly as
# it goes; the process of client 0 sends the line.
run=$(printf 'r%05d' $((RANDOM % 100000)))
echo "== a room of $total on $nodes node(s) at ${addrs[*]} (nats-server :$port)"
bench_pids=()
for i in $(seq 0 $((nodes - 1))); do
  first=$((total * i / nodes)); count=$((total * (i + 1) / nodes - first))
  broadcast=(); [ "$i" -eq 0 ] && broadcast=(--broadcast)
  "$bin" bench --addr "${addrs[$i]}" --ca "$work/certs/ca.pem" --server-pid "${node_pids[$i]}" \
    --scenario big --total "$total" --clients "$count" --first-client "$first" --run "$run" \
    ${broadcast[@]+"${broadcast[@]}"} --stall-timeout "$stall" --timeout "$limit" --json "$@" \
    >"$work/bench$i.json" 2>"$work/bench$i.err" &
  bench_pids+=($!); pids+=($!)
done
failed=0
for i in "${!bench_pids[@]}"; do
  wait "${bench_pids[$i]}" || { failed=1; echo "bench $((i + 1)) failed:" >&2; cat "$work/bench$i.err" >&2; }
done

for i in "${!node_pids[@]}"; do
  json=$(cat "$work/bench$i.json")
  [ -n "$json" ] || { echo "node$((i + 1)): its bench printed no report" >&2; failed=1; continue; }
  echo "$json" | jq -r --arg node "node$((i + 1))" '
    def r(n): . * n | round / n;
    def kib: . / 1024 | r(10);
    if .clients == 0 then "\($node): FAILED: \(.problems | join("; "))" else
    "\($node): \(.clients) participants (room: " +
    "\(if .room_size then "\(.room_size) of \(.room_total) by /list"
        else "\(.room_total), full when the line was sent" end)); " +
    "joined in \(.seconds | r(1000)) s, room full after \(.fill_s // 0 | r(1000)) s; " +
    "line reached all in \(.broadcast_s // 0 | r(1000)) s; " +
    "RSS \(.server_rss_after_bytes // 0 | . / 1048576 | r(10)) MiB, " +
    "\((.server_rss_after_bytes // 0) / .clients | kib) KiB per participant " +
    "(\(.server_rss_per_participant_bytes // 0 | kib) KiB over its start); " +
    "check \(if .ok then "OK" else "FAILED: \(.problems | join("; "))" end)" end'
done

printf 'CPU s:'
for i in "${!node_pids[@]}"; do
  printf ' node%d %s' "$((i + 1))" "$(minus "$(cpu "${node_pids[$i]}")" "${node_before[$i]}")"
done
printf ' nats-server %s' "$(minus "$(cpu "$nats_pid")" "$nats_before")"
for i in "${!node_pids[@]}"; do
  printf ' bench%d %s' "$((i + 1))" "$(jq -r '.bench_cpu_s // "?"' "$work/bench$i.json" 2>/dev/null || echo '?')"
done
echo
exit "$failed"
