#!/usr/bin/env bash
# Throughput of two webhook builds against each other, in one run: an A/B test of a change.
#
#   cp target/release/pullsecret-injector /tmp/before      # build and keep the "before" binary
#   ... change, cargo build --release --bin pullsecret-injector --examples ...
#   bash benches/compare.sh /tmp/before target/release/pullsecret-injector [rounds]
#
# Both builds serve the same config and certificates behind one fake API (examples/fake_api_server),
# each provisions team-a once, and then examples/loadgen drives them in alternating max-throughput
# phases (32 connections, HTTP/1.1 keep-alive over TLS, pod-create-direct.json; A first in odd
# rounds, B first in even ones). Prints every round and the median ratio B/A of req/s, with each
# build's median server CPU per review (utime + stime over the phase). `benches/load.sh` compares the
# webhook with a no-op server; this compares two webhooks, where one phase each would be a coin toss
# on a shared machine.
#
# Environment: SECONDS_PER_PHASE (default 5), CONNECTIONS (32), LOADGEN_THREADS (2).
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: bash benches/compare.sh BINARY_A BINARY_B [rounds]" >&2; exit 2; }
# Resolved before the cd below, so that paths relative to where the script was started work.
A=$(realpath -- "$1")
B=$(realpath -- "$2")
ROUNDS=${3:-8}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PHASE=${SECONDS_PER_PHASE:-5}
CONNECTIONS=${CONNECTIONS:-32}
LOADGEN_THREADS=${LOADGEN_THREADS:-2}
EX=${CARGO_TARGET_DIR:-target}/release/examples
for f in "$A" "$B" "$EX/loadgen" "$EX/fake_api_server"; do
  [ -x "$f" ] || { echo "compare.sh: $f is missing (cargo build --release --examples)" >&2; exit 1; }
done
for tool in openssl curl jq python3; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool is needed" >&2; exit 1; }
done

HARNESS=compare.sh
# shellcheck source=benches/support/harness.sh
. benches/support/harness.sh

write_inputs "$A"
REVIEW=tests/fixtures/admission-reviews/pod-create-direct.json
start_fake_api

PORT_A=$(free_port)
start_webhook "$A" "$PORT_A" "$TMP/a.log"
PID_A=$!
PORT_B=$(free_port "$PORT_A")
start_webhook "$B" "$PORT_B" "$TMP/b.log"
PID_B=$!
wait_https "$PORT_A" /readyz "$TMP/a.log"
wait_https "$PORT_B" /readyz "$TMP/b.log"
# Both still running: a build that failed to start must not leave the other answering for both.
for pid in "$PID_A" "$PID_B"; do
  kill -0 "$pid" 2>/dev/null || { echo "compare.sh: a webhook exited:" >&2; cat "$TMP"/*.log >&2; exit 1; }
done

loadgen() { # port duration out
  "$EX/loadgen" --target "127.0.0.1:$1" --ca "$TMP/certs/ca.crt" --threads "$LOADGEN_THREADS" --json \
    --body "$REVIEW" --connections "$CONNECTIONS" --max --duration "$2" >"$3"
}
# The first review provisions team-a; then a short warm-up of each.
for port in "$PORT_A" "$PORT_B"; do
  loadgen "$port" 1s "$TMP/warm1.json"
  loadgen "$port" 2s "$TMP/warm2.json"
done

# utime + stime: fields 14 and 15 of /proc/<pid>/stat, counted after the command name, which
# may hold spaces.
cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
CLK_TCK=$(getconf CLK_TCK)
phase() { # port pid out -> "req/s cpu-µs-per-review"; fails if loadgen does
  local c0 c1
  c0=$(cpu_ticks "$2")
  loadgen "$1" "${PHASE}s" "$3" || return 1
  c1=$(cpu_ticks "$2")
  jq -r --argjson t "$((c1 - c0))" --argjson hz "$CLK_TCK" \
    'if .errors + .non_200 + .not_allowed > 0 then error("failed answers") else "\(.rps) \($t * 1000000 / $hz / .requests)" end' "$3"
}

echo "A: $A"
echo "B: $B"
: >"$TMP/rounds"
for r in $(seq 1 "$ROUNDS"); do
  if [ $((r % 2)) -eq 1 ]; then
    a=$(phase "$PORT_A" "$PID_A" "$TMP/a$r.json")
    b=$(phase "$PORT_B" "$PID_B" "$TMP/b$r.json")
  else
    b=$(phase "$PORT_B" "$PID_B" "$TMP/b$r.json")
    a=$(phase "$PORT_A" "$PID_A" "$TMP/a$r.json")
  fi
  # `set -e` does not reach into $(...): a failed phase leaves its figures empty.
  [ -n "$a" ] && [ -n "$b" ] || { echo "compare.sh: round $r failed" >&2; exit 1; }
  echo "$a $b" >>"$TMP/rounds"
  echo "$a $b" | awk -v r="$r" '{printf "round %d: A %.0f req/s, %.1f µs CPU | B %.0f req/s, %.1f µs CPU | B/A %.2f\n", r, $1, $2, $3, $4, $3 / $1}'
done
python3 - "$TMP/rounds" <<'EOF'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
ratios = [b / a for a, _, b, _ in rows]
print("median B/A %.3f (rounds %.2f to %.2f, %d rounds); median server CPU per review: A %.1f µs, B %.1f µs"
      % (statistics.median(ratios), min(ratios), max(ratios), len(rows),
         statistics.median(row[1] for row in rows), statistics.median(row[3] for row in rows)))
EOF
