#!/usr/bin/env bash
# The lab's dry run (Alice, Bob and Charlie join, Alice says "Hello
# everyone!", Charlie leaves), captured twice on the loopback interface with
# tshark: once with --plaintext and once over TLS with SSLKEYLOGFILE set.
# Writes plaintext.pcapng, tls.pcapng and tls-keys.log into OUT_DIR (a new
# temporary folder if not given) and prints a report in which every figure
# is counted by tshark from those files.
#
# Usage: scripts/capture-demo.sh [--tls-version 1.2|1.3] [OUT_DIR]
#        scripts/capture-demo.sh --count CAPTURE PORT
# --count counts the text in a capture of your own (the server on PORT).
# Needs: tshark (Debian/Ubuntu: apt-get install tshark), and the right to
# capture on lo (root, or membership of the wireshark group).
# Everything stays on 127.0.0.1, and every step has a time limit.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/dry-run.sh
. "$repo/scripts/dry-run.sh"

version_opts=() out= count=()
while [ $# -gt 0 ]; do
  case $1 in
    --tls-version) version_opts=(--tls-version "$2"); shift 2 ;;
    --count) [ $# -ge 3 ] || { echo "usage: $0 --count CAPTURE PORT" >&2; exit 2; }
      count=("$2" "$3"); shift 3 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) out=$1; shift ;;
  esac
done
text="Hello everyone!"
text_hex=$(printf '%s' "$text" | od -An -tx1 | tr -d ' \n')

if ! command -v tshark >/dev/null; then
  echo "tshark is not installed. On Debian or Ubuntu: sudo apt-get install tshark" >&2
  echo "(then capture as root, or add yourself to the wireshark group)" >&2
  exit 2
fi

# Counts the text in hex TCP payloads read from stdin, one per line.
count_text() { { grep -o "$text_hex" || true; } | wc -l; }

# A segment TCP sends again (Wireshark marks it "TCP Retransmission";
# loopback does it too, on a busy machine) holds the same copy: only each
# segment's first sending counts.
first_copies='not (tcp.analysis.retransmission or tcp.analysis.fast_retransmission or tcp.analysis.spurious_retransmission)'

# Prints CAPTURE's packets, first sendings only, one per line: source
# port, payload, TLS record lengths and handshake types, split by '|'.
read_fields() {
  tshark -r "$1" -Y "$first_copies" -T fields -E separator='|' -E occurrence=a \
    -e tcp.srcport -e tcp.payload -e tls.record.length -e tls.handshake.type 2>/dev/null
}

# Says how many times the text is in the payloads of FIELDS (as
# read_fields prints them), and how many of those the server on PORT sent.
copies() {
  local all from_server
  all=$(cut -d'|' -f2 "$1" | count_text)
  from_server=$(awk -F'|' -v port="$2" '$1 == port { print $2 }' "$1" | count_text)
  echo "\"$text\" in raw TCP payloads: $all (sent by the server: $from_server)"
}

if [ ${#count[@]} -gt 0 ]; then
  [ -r "${count[0]}" ] || { echo "cannot read ${count[0]}" >&2; exit 2; }
  fields=$(mktemp)
  read_fields "${count[0]}" >"$fields"
  copies "$fields" "${count[1]}"
  rm -f "$fields"
  exit 0
fi

out=${out:-$(mktemp -d)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
bin=${CHATROOM_BIN:-$repo/target/release/chatroom}
if [ ! -x "$bin" ]; then
  echo "building chatroom (release)..." >&2
  (cd "$repo" && cargo build --release --quiet)
fi

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# Waits (at most 10 s) until FILE contains PATTERN anywhere in a line.
wait_for() {
  local i
  for i in $(seq 200); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "timed out waiting for '$2' in $1" >&2; cat "$1" >&2; return 1
}

(cd "$work" && "$bin" gen-certs --dir certs >/dev/null)
rm -f "$out/tls-keys.log"

for mode in plaintext tls; do
  flag=(); [ "$mode" = plaintext ] && flag=(--plaintext) || flag=("${version_opts[@]}")
  log="$work/serve-$mode.log"
  keylog=(); [ "$mode" = tls ] && keylog=(SSLKEYLOGFILE="$out/tls-keys.log")
  (cd "$work" && exec env "${keylog[@]}" "$bin" serve --addr 127.0.0.1:0 "${flag[@]}" 2>"$log") &
  server=$!; pids+=("$server")
  wait_for "$log" "listening addr="
  addr=$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$log" | head -n1)
  port=${addr##*:}

  pcap="$out/$mode.pcapng"
  rm -f "$pcap"
  tshark -i lo -f "tcp port $port" -w "$pcap" -q 2>"$work/tshark-$mode.log" &
  tpid=$!; pids+=("$tpid")
  wait_for "$work/tshark-$mode.log" "Capturing on"
  # The capture runs once its file has a header.
  for _ in $(seq 200); do [ -s "$pcap" ] && break; sleep 0.05; done

  mkdir -p "$work/$mode"
  # The clients log their secrets to the same file as the server.
  SSLKEYLOGFILE=$([ "$mode" = tls ] && echo "$out/tls-keys.log" || true) \
    play_dry_run "$bin" "$addr" "$work/certs/ca.pem" "$work/$mode" "${flag[@]}"
  # Wait (at most 10 s) until the capture holds the close (FIN) of each of
  # the three connections, then stop it and the server.
  for _ in $(seq 20); do
    closed=$(tshark -r "$pcap" -Y "tcp.flags.fin == 1" -T fields -e tcp.stream 2>/dev/null |
      sort -u | wc -l || true)
    [ "$closed" -ge 3 ] && break
    sleep 0.2
  done
  kill "$tpid"; wait "$tpid" 2>/dev/null || true
  kill "$server"; wait "$server" 2>/dev/null || true

  echo "=== $mode: $pcap"
  print_transcripts "$work/$mode" | sed 's/^/    /'
  # One pass over the capture for the figures, one more to decrypt.
  fields="$work/$mode.fields"
  read_fields "$pcap" >"$fields"
  echo "$mode: $(copies "$fields" "$port")"
  if [ "$mode" = tls ]; then
    records=$(cut -d'|' -f3 "$fields" | tr ',' '\n' | grep -c . || true)
    hello=$(tshark -r "$pcap" -Y "tls.handshake.type == 2 || tls.handshake.type == 11" -V 2>/dev/null)
    handshakes=$(grep -c '^ *Handshake Type: Server Hello (2)' <<<"$hello" || true)
    version=$(sed -n 's/^ *Supported Version: \(TLS 1\.[0-9]\).*/\1/p' <<<"$hello" | head -n1)
    [ -n "$version" ] || version=$(sed -n '/Server Hello (2)/,$ s/^ *Version: \(TLS 1\.[0-9]\).*/\1/p' <<<"$hello" | head -n1)
    suite=$(sed -n 's/^ *Cipher Suite: //p' <<<"$hello" | head -n1)
    decrypted=$(tshark -r "$pcap" -o "tls.keylog_file:$out/tls-keys.log" -T fields -e data.data \
      2>/dev/null | count_text)
    echo "tls: handshakes: $handshakes, version: $version, cipher suite: $suite"
    echo "tls: TLS records: $records"
    echo "tls: \"$text\" after decrypting with tls-keys.log: $decrypted"
    if grep -q '^ *Handshake Type: Certificate (11)' <<<"$hello"; then
      echo "tls: server certificate readable in the capture: yes"
      # The first certificate's fields, as tshark decodes them.
      awk '
        /Handshake Type: Certificate \(11\)/ { n++ }
        n != 1 { next }
        /^ *(subject|issuer): rdnSequence/ { want = $1; next }
        want != "" && /rdnSequence: [0-9]+ items \(/ {
          sub(/^[^(]*\(/, ""); sub(/\)$/, ""); gsub(/id-at-/, "")
          print want " " $0; want = ""; next
        }
        /^ *(notBefore|notAfter): utcTime/ { when = $1; sub(/:$/, "", when); next }
        when != "" && /^ *utcTime: / { sub(/^ *utcTime: /, ""); print when ": " $0; when = ""; next }
        /^ *(dNSName|iPAddress): / { sub(/^ */, ""); print "name in the certificate, " $0 }
      ' <<<"$hello" | awk '!seen[$0]++' | sed 's/^/    /'
    else
      echo "tls: server certificate readable in the capture: no (encrypted in TLS 1.3)"
    fi
  fi
done
echo "=== files: $out/plaintext.pcapng $out/tls.pcapng $out/tls-keys.log"
