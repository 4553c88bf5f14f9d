#!/usr/bin/env bash
# Throughput of two webhook builds against each other, in one run: an A/B test of a change.
#
#   cp target/release/pullsecret-injector /tmp/before      # build and keep the "before" binary
#   ... change, cargo build --release --bin pullsecret-injector --examples ...
#   bash benches/compare.sh /tmp/before target/release/pullsecret-injector [rounds]
#   bash benches/compare.sh noop target/release/pullsecret-injector     # the webhook against the no-op
#   CLIENT=oha bash benches/compare.sh noop target/release/pullsecret-injector   # driven by oha
#
# Both builds serve the same config and certificates behind one fake API (examples/fake_api_server),
# each provisions team-a once, and then the load client drives them in alternating max-throughput
# phases (32 connections, HTTP/1.1 keep-alive over TLS, pod-create-direct.json compacted as the API
# server sends it; A first in odd rounds, B first in even ones). Prints every round and the median
# ratio B/A of req/s, with each side's median server CPU per review (utime + stime over the phase,
# and the two apart), the load client's own CPU per review (examples/loadgen's getrusage) and the
# whole machine's user and kernel time per review (from /proc/stat: client, servers and kernel
# together; the machine is busy throughout, so throughput is the inverse of their sum).
# One phase each would be a coin toss on a shared machine.
#
# A side given as the word `noop` is examples/noop_webhook (the baseline of benches/load.sh) on the
# same certificate.
#
# Environment: SECONDS_PER_PHASE (default 5), CONNECTIONS (32), LOADGEN_THREADS (2),
# NOOP_READ_AHEAD (set: the `noop` side reads the socket as the webhook does, see benches/support/harness.sh),
# CLIENT (loadgen: examples/loadgen, which also checks that every answer is allowed; or oha: the
# load generator from crates.io, `cargo install oha`, as an independent cross-check: it checks the
# status only; its worker threads default to the number of cores).
set -euo pipefail

[ $# -ge 2 ] || { echo "usage: bash benches/compare.sh BINARY_A BINARY_B [rounds]" >&2; exit 2; }
# Resolved before the cd below, so that paths relative to where the script was started work.
side() { if [ "$1" = noop ]; then echo noop; else realpath -- "$1"; fi; }
A=$(side "$1")
B=$(side "$2")
ROUNDS=${3:-8}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PHASE=${SECONDS_PER_PHASE:-5}
CONNECTIONS=${CONNECTIONS:-32}
LOADGEN_THREADS=${LOADGEN_THREADS:-2}
CLIENT=${CLIENT:-loadgen}
EX=${CARGO_TARGET_DIR:-target}/release/examples
case $CLIENT in
  loadgen) ;;
  oha) command -v oha >/dev/null || { echo "compare.sh: oha is not installed (cargo install oha)" >&2; exit 1; } ;;
  *) echo "compare.sh: CLIENT must be loadgen or oha" >&2; exit 2 ;;
esac
[ "$A" != noop ] || [ "$B" != noop ] || { echo "compare.sh: at most one side can be noop" >&2; exit 2; }
for f in "$A" "$B" "$EX/noop_webhook" "$EX/loadgen" "$EX/fake_api_server"; do
  [ "$f" = noop ] || [ -x "$f" ] || { echo "compare.sh: $f is missing (cargo build --release --examples)" >&2; exit 1; }
done
for tool in openssl curl jq python3; do
  command -v "$tool" >/dev/null || { echo "compare.sh: $tool is needed" >&2; exit 1; }
done

HARNESS=compare.sh
# shellcheck source=benches/support/harness.sh
. benches/support/harness.sh

if [ "$A" = noop ]; then write_inputs "$B"; else write_inputs "$A"; fi
REVIEW=tests/fixtures/admission-reviews/pod-create-direct.json
# What the API server sends: compact JSON (the fixtures are indented for reading). examples/loadgen
# compacts by itself; oha sends the file as it is.
python3 -c 'import json, sys; sys.stdout.write(json.dumps(json.load(open(sys.argv[1])), separators=(",", ":"), ensure_ascii=False))' \
  "$REVIEW" >"$TMP/review.json"
start_fake_api

start_side() { # binary-or-noop port log
  if [ "$1" = noop ]; then
    start_noop "$2" "$3"
  else
    start_webhook "$1" "$2" "$3"
  fi
}
PORT_A=$(free_port)
start_side "$A" "$PORT_A" "$TMP/a.log"
PID_A=$!
PORT_B=$(free_port "$PORT_A")
start_side "$B" "$PORT_B" "$TMP/b.log"
PID_B=$!
wait_https "$PORT_A" /readyz "$TMP/a.log"
wait_https "$PORT_B" /readyz "$TMP/b.log"
# Both still running: a build that failed to start must not leave the other answering for both.
for pid in "$PID_A" "$PID_B"; do
  kill -0 "$pid" 2>/dev/null || { echo "compare.sh: a webhook exited:" >&2; cat "$TMP"/*.log >&2; exit 1; }
done

# One max-throughput run; writes loadgen's JSON, or oha's reduced to the same fields.
loadgen() { # port duration out
  if [ "$CLIENT" = oha ]; then
    oha --no-tui --output-format json -w -c "$CONNECTIONS" -z "$2" --http-version 1.1 -m POST \
      -T application/json -D "$TMP/review.json" --cacert "$TMP/certs/ca.crt" \
      "https://127.0.0.1:$1/mutate?timeout=10s" >"$3.oha" || return 1
    jq '{rps: .summary.requestsPerSec,
         requests: ([.statusCodeDistribution[]] | add // 0),
         non_200: ([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0),
         errors: ([.errorDistribution[]?] | add // 0),
         not_allowed: 0}' "$3.oha" >"$3"
  else
    "$EX/loadgen" --target "127.0.0.1:$1" --ca "$TMP/certs/ca.crt" --threads "$LOADGEN_THREADS" --json \
      --body "$REVIEW" --connections "$CONNECTIONS" --max --duration "$2" >"$3"
  fi
}
# The first review provisions team-a; then a short warm-up of each.
for port in "$PORT_A" "$PORT_B"; do
  loadgen "$port" 1s "$TMP/warm1.json"
  loadgen "$port" 2s "$TMP/warm2.json"
done

# The whole machine's time from the first line of /proc/stat: user + nice, system + irq + softirq,
# idle + iowait (clients, servers and kernel together; the machine is shared, so this is a guide).
machine_ticks() { awk 'NR == 1 { print $2 + $3, $4 + $7 + $8, $5 + $6 }' /proc/stat; }
# port pid out -> "req/s server-cpu-µs server-user-µs server-system-µs machine-user-µs
# machine-kernel-µs machine-idle-% client-user-µs client-system-µs" per review (the client's own
# CPU as examples/loadgen reports it; -1 with oha); fails if the client does
phase() {
  local c0 c1 m0 m1
  c0=$(cpu_ticks_split "$2")
  m0=$(machine_ticks)
  loadgen "$1" "${PHASE}s" "$3" || return 1
  m1=$(machine_ticks)
  c1=$(cpu_ticks_split "$2")
  jq -r --arg c0 "$c0" --arg c1 "$c1" --argjson hz "$CLK_TCK" --arg m0 "$m0" --arg m1 "$m1" '
    ($m0 | split(" ") | map(tonumber)) as $a | ($m1 | split(" ") | map(tonumber)) as $b |
    ([range(3)] | map($b[.] - $a[.])) as $d |
    ($c0 | split(" ") | map(tonumber)) as $s0 | ($c1 | split(" ") | map(tonumber)) as $s1 |
    ([range(2)] | map($s1[.] - $s0[.])) as $c |
    (1000000 / $hz / .requests) as $us |
    if .errors + .non_200 + .not_allowed > 0 then error("failed answers")
    else "\(.rps) \(($c[0] + $c[1]) * $us) \($c[0] * $us) \($c[1] * $us) \($d[0] * $us) \($d[1] * $us) \(100 * $d[2] / ($d[0] + $d[1] + $d[2])) \(if .client_cpu_user_s then .client_cpu_user_s * 1000000 / .requests else -1 end) \(if .client_cpu_system_s then .client_cpu_system_s * 1000000 / .requests else -1 end)"
    end' "$3"
}

echo "A: $A"
echo "B: $B"
echo "client: $CLIENT"
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
  echo "$a $b" | awk -v r="$r" '{printf "round %d: A %.0f req/s, server %.1f µs CPU (%.1f user + %.1f system), client %.1f + %.1f µs, machine %.1f + %.1f µs, %.1f %% idle | B %.0f req/s, server %.1f µs (%.1f + %.1f), client %.1f + %.1f µs, machine %.1f + %.1f µs, %.1f %% idle | B/A %.2f\n", r, $1, $2, $3, $4, $8, $9, $5, $6, $7, $10, $11, $12, $13, $17, $18, $14, $15, $16, $10 / $1}'
done
python3 - "$TMP/rounds" <<'EOF'
import statistics, sys
rows = [list(map(float, line.split())) for line in open(sys.argv[1]) if line.strip()]
ratios = [row[9] / row[0] for row in rows]
median = lambda column: statistics.median(row[column] for row in rows)
print("median B/A %.3f (rounds %.2f to %.2f, %d rounds); median server CPU per review: A %.1f µs, B %.1f µs"
      % (statistics.median(ratios), min(ratios), max(ratios), len(rows), median(1), median(10)))
print("median server user + system per review: A %.1f + %.1f µs, B %.1f + %.1f µs"
      % (median(2), median(3), median(11), median(12)))
if median(7) >= 0:
    print("median client (load generator) user + system per review: A %.1f + %.1f µs, B %.1f + %.1f µs"
          % (median(7), median(8), median(16), median(17)))
print("median machine time per review (user + kernel, all processes): A %.1f + %.1f µs, %.1f %% idle; B %.1f + %.1f µs, %.1f %% idle"
      % (median(4), median(5), median(6), median(13), median(14), median(15)))
EOF
