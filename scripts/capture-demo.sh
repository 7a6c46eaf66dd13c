#!/usr/bin/env bash
# Capture the same short chat twice on the loopback interface, once with
# --plaintext and once over TLS, and show what an eavesdropper sees in each.
# For the classroom: open the two .pcapng files in Wireshark afterwards.
#
# Usage: scripts/capture-demo.sh [OUTPUT_DIR]
# Needs: tshark (Debian/Ubuntu: apt-get install tshark), and the right to
# capture on lo (root, or membership of the wireshark group).
# Everything stays on 127.0.0.1, and every step has a time limit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$(mktemp -d)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=${CHATROOM_BIN:-$repo/target/release/chatroom}
secret="the vault code is 4711"

command -v tshark >/dev/null || { echo "tshark is not installed (apt-get install tshark)" >&2; exit 2; }
if [ ! -x "$bin" ]; then
  echo "building chatroom (release)..." >&2
  (cd "$repo" && cargo build --release --quiet)
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Waits (at most 10 s) until FILE contains PATTERN.
wait_for() {
  for _ in $(seq 100); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

(cd "$work" && "$bin" gen-certs --dir certs >/dev/null)

for mode in plaintext tls; do
  flag=(); [ "$mode" = plaintext ] && flag=(--plaintext)
  log="$work/serve-$mode.log"
  (cd "$work" && exec "$bin" serve --addr 127.0.0.1:0 "${flag[@]}" 2>"$log") & pids+=($!)
  wait_for "$log" "listening addr="
  addr=$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -n1)
  port=${addr##*:}

  pcap="$out/chat-$mode.pcapng"
  tshark -i lo -f "tcp port $port" -w "$pcap" -q 2>"$work/tshark-$mode.log" & tpid=$!; pids+=($tpid)
  wait_for "$work/tshark-$mode.log" "Capturing on"

  # Bob listens; Alice joins, says the secret, and leaves.
  (cd "$work" && timeout 10 "$bin" connect --addr "$addr" --ca certs/ca.pem --nick bob "${flag[@]}" \
      < <(sleep 3) > "$work/bob-$mode.txt" 2>/dev/null) & bob=$!
  wait_for "$work/bob-$mode.txt" "Connected to server!"
  (cd "$work" && printf '%s\n' "$secret" | timeout 10 "$bin" connect --addr "$addr" --ca certs/ca.pem \
      --nick alice "${flag[@]}" >/dev/null 2>&1)
  wait_for "$work/bob-$mode.txt" "alice left!"
  wait "$bob" || true
  kill "$tpid"; wait "$tpid" 2>/dev/null || true

  echo "=== $mode: $pcap"
  echo "--- what Bob's screen showed:"
  sed 's/^/    /' "$work/bob-$mode.txt"
  echo "--- what an eavesdropper reads in the capture (TCP payload as text):"
  tshark -r "$pcap" -q -z follow,tcp,ascii,0 2>/dev/null | grep -v '^[0-9]*$' | sed -n '6,16p' | cut -c1-100 | sed 's/^/    /'
  if [ -n "$(tshark -r "$pcap" -Y "frame contains \"$secret\"" 2>/dev/null)" ]; then
    echo "--- the secret is VISIBLE in the capture"
  else
    echo "--- the secret is NOT in the capture; TLS records seen:"
    tshark -r "$pcap" -Y tls -T fields -e tls.record.version -e tls.record.content_type -e _ws.col.Info \
      2>/dev/null | sort | uniq -c | head -n 8 | sed 's/^/    /'
  fi
done
