#!/usr/bin/env bash
# The lab's dry run, live: a fresh server in a temporary folder (its own
# certificates, a free port on 127.0.0.1), three `chatroom connect`
# processes for Alice, Bob and Charlie, and each one's screen printed side
# by side. Cleans up after itself.
#
# Usage: scripts/demo.sh [--plaintext] [--tls-version 1.2|1.3]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/dry-run.sh
. "$repo/scripts/dry-run.sh"
bin=${CHATROOM_BIN:-$repo/target/release/chatroom}
if [ ! -x "$bin" ]; then
  echo "building chatroom (release)..." >&2
  (cd "$repo" && cargo build --release --quiet)
fi

serve_opts=() connect_opts=()
while [ $# -gt 0 ]; do
  case $1 in
    --plaintext) serve_opts+=(--plaintext); connect_opts+=(--plaintext); shift ;;
    --tls-version) serve_opts+=(--tls-version "$2"); connect_opts+=(--tls-version "$2"); shift 2 ;;
    *) echo "usage: $0 [--plaintext] [--tls-version 1.2|1.3]" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

(cd "$work" && "$bin" gen-certs --dir certs >/dev/null)
(cd "$work" && exec "$bin" serve --addr 127.0.0.1:0 "${serve_opts[@]}" 2>"$work/serve.log") &
server=$!
wait_for_line_part() {
  local i
  for i in $(seq 200); do grep -q -- "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  echo "the server did not start:" >&2; cat "$1" >&2; return 1
}
wait_for_line_part "$work/serve.log" "listening addr="
addr=$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$work/serve.log" | head -n1)

echo "server on $addr ($([ ${#serve_opts[@]} -gt 0 ] && echo "${serve_opts[*]}" || echo TLS))"
play_dry_run "$bin" "$addr" "$work/certs/ca.pem" "$work" "${connect_opts[@]}"
echo
print_transcripts "$work"
echo
echo "Alice's client said on stderr:"
sed 's/^/    /' "$work/Alice.err"
