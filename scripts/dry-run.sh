# The lab's dry run, played with three `chatroom connect` processes:
# Alice, Bob and Charlie join in turn, Alice says "Hello everyone!", and
# Charlie leaves. Sourced by demo.sh and capture-demo.sh; not run alone.
#
#   play_dry_run BIN ADDR CA WORKDIR [connect options...]
#
# Each participant's screen goes to WORKDIR/<Name>.txt, its stderr to
# WORKDIR/<Name>.err. Every wait is on a line appearing, with a time limit.

# Waits (at most 10 s) until FILE contains the line LINE.
wait_for_line() {
  local i
  for i in $(seq 200); do
    grep -qxF -- "$2" "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "timed out waiting for '$2' in $1:" >&2
  cat "$1" >&2
  return 1
}

# Waits (at most 10 s) until process PID has ended.
wait_for_exit() {
  local i
  for i in $(seq 200); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.05
  done
  echo "process $1 did not end in time" >&2
  return 1
}

play_dry_run() {
  local bin=$1 addr=$2 ca=$3 work=$4
  shift 4
  local opts=("$@") name fd
  declare -gA dry_run_fd=() dry_run_pid=()
  for name in Alice Bob Charlie; do
    # The participant reads what we write to its fd, as if typed.
    exec {fd}> >(exec timeout 30 "$bin" connect --addr "$addr" --ca "$ca" --nick "$name" \
      "${opts[@]}" >"$work/$name.txt" 2>"$work/$name.err")
    dry_run_fd[$name]=$fd
    dry_run_pid[$name]=$!
    wait_for_line "$work/$name.txt" "Connected to server!"
  done
  wait_for_line "$work/Alice.txt" "Charlie joined!"
  wait_for_line "$work/Bob.txt" "Charlie joined!"

  echo "Hello everyone!" >&"${dry_run_fd[Alice]}"
  for name in Alice Bob Charlie; do
    wait_for_line "$work/$name.txt" "Alice: Hello everyone!"
  done

  # Charlie leaves: the end of its input closes the session cleanly.
  fd=${dry_run_fd[Charlie]}
  exec {fd}>&-
  wait_for_exit "${dry_run_pid[Charlie]}"
  wait_for_line "$work/Alice.txt" "Charlie left!"
  wait_for_line "$work/Bob.txt" "Charlie left!"

  # The end of the show: Bob leaves, and once Alice has seen him go (his
  # process ending says nothing about when the room tells her), Alice.
  fd=${dry_run_fd[Bob]}
  exec {fd}>&-
  wait_for_exit "${dry_run_pid[Bob]}"
  wait_for_line "$work/Alice.txt" "Bob left!"
  fd=${dry_run_fd[Alice]}
  exec {fd}>&-
  wait_for_exit "${dry_run_pid[Alice]}"
}

# Prints the three transcripts side by side, as in the README.
print_transcripts() {
  local work=$1
  printf '%-26s%-26s%s\n' "Alice's screen" "Bob's screen" "Charlie's screen"
  paste -d '\t' "$work/Alice.txt" "$work/Bob.txt" "$work/Charlie.txt" |
    awk -F '\t' '{ printf "%-26s%-26s%s\n", $1, $2, $3 }'
}
