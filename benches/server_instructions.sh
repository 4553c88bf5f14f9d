#!/usr/bin/env bash
# User-space instructions per request of a whole server (TLS, HTTP, the handler), counted by
# callgrind: deterministic, unlike throughput on a shared machine.
#
#   bash benches/server_instructions.sh                      # the no-op and target/release/pullsecret-injector
#   bash benches/server_instructions.sh noop /tmp/before target/release/pullsecret-injector
#   REQUESTS="500 2500" bash benches/server_instructions.sh   # the two request counts (default)
#   MEASURE=allocations bash benches/server_instructions.sh   # heap allocations per request (DHAT)
#
# Needs the release binaries (cargo build --release --bin pullsecret-injector --examples),
# valgrind, openssl, curl and jq. Each server runs under callgrind (DHAT for allocations) twice,
# behind the fake API with the load harness's config and certificates, and serves N1 and then N2
# direct reviews (compacted, 8 keep-alive connections, examples/loadgen); the script prints
# (count(N2) - count(N1)) / (N2 - N1): start-up, handshakes and shutdown cancel out. Not counted: the kernel, so a system call saved
# shows in load runs (benches/compare.sh), not here; and valgrind's CPU has no AVX-512, so the
# JSON reader runs its SSE2 kernel.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
read -r N1 N2 <<<"${REQUESTS:-500 2500}"
MEASURE=${MEASURE:-instructions}
case $MEASURE in
  instructions | allocations) ;;
  *) echo "server_instructions.sh: MEASURE must be instructions or allocations" >&2; exit 2 ;;
esac
[ "$N2" -gt "$N1" ] || { echo "server_instructions.sh: REQUESTS must be two counts, the second larger" >&2; exit 2; }
EX=${CARGO_TARGET_DIR:-target}/release/examples
BIN=${CARGO_TARGET_DIR:-target}/release/pullsecret-injector
SIDES=("$@")
[ ${#SIDES[@]} -gt 0 ] || SIDES=(noop "$BIN")
for tool in valgrind openssl curl jq; do
  command -v "$tool" >/dev/null || { echo "server_instructions.sh: $tool is needed" >&2; exit 1; }
done
for f in "$BIN" "$EX/noop_webhook" "$EX/loadgen" "$EX/fake_api_server"; do
  [ -x "$f" ] || { echo "server_instructions.sh: $f is missing (build first)" >&2; exit 1; }
done

HARNESS=server_instructions.sh
# shellcheck source=benches/support/harness.sh
. benches/support/harness.sh

write_inputs "$BIN"
start_fake_api
REVIEW=$TMP/direct.json
jq -c . tests/fixtures/admission-reviews/pod-create-direct.json >"$REVIEW"

# Instructions (callgrind) or heap allocations (DHAT) of one run of `side` serving `requests` reviews.
count() { # side requests
  local side=$1 requests=$2 port pid out=$TMP/valgrind.out
  port=$(free_port)
  if [ "$MEASURE" = instructions ]; then
    SERVER_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=$out"
  else
    SERVER_WRAPPER="valgrind --tool=dhat --dhat-out-file=$out"
  fi
  if [ "$side" = noop ]; then
    start_noop "$port" "$TMP/server.log"
  else
    start_webhook "$side" "$port" "$TMP/server.log"
  fi
  SERVER_WRAPPER=
  pid=$!
  for _ in $(seq 1 300); do
    curl -s -o /dev/null --cacert "$TMP/certs/ca.crt" "https://127.0.0.1:$port/healthz" && break
    sleep 0.2
  done
  "$EX/loadgen" --target "127.0.0.1:$port" --ca "$TMP/certs/ca.crt" --body "$REVIEW" --max \
    --duration 300s --requests "$requests" --connections 8 --threads 1 --json >"$TMP/loadgen.json"
  kill -INT "$pid"
  wait "$pid" 2>/dev/null || true
  local served
  served=$(jq -r '.ok' "$TMP/loadgen.json")
  [ "$served" = "$requests" ] || { echo "server_instructions.sh: $side answered $served of $requests" >&2; cat "$TMP/server.log" >&2; exit 1; }
  if [ "$MEASURE" = instructions ]; then
    sed -n 's/^summary: //p' "$out"
  else
    # DHAT's summary on the server's stderr: "Total:     N bytes in M blocks".
    sed -n 's/.*Total: .* in \([0-9,]*\) blocks.*/\1/p' "$TMP/server.log" | tr -d ,
  fi
}

printf '%-48s %22s\n' server "$MEASURE/request"
for side in "${SIDES[@]}"; do
  [ "$side" = noop ] || side=$(realpath -- "$side")
  a=$(count "$side" "$N1")
  b=$(count "$side" "$N2")
  awk -v side="$side" -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" 'BEGIN { printf "%-48s %22.1f\n", side, (b - a) / (n2 - n1) }'
done
