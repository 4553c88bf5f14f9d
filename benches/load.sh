#!/usr/bin/env bash
# HTTPS load test of the shipped webhook (profile dist) against a no-op baseline, measured in the same run.
#
#   bash benches/load.sh                # from the repository root; ~4.5 min after the build
#   SKIP_BUILD=1 bash benches/load.sh   # reuse target/dist binaries
#   OUT=target/load.json bash benches/load.sh   # also keep every phase's raw JSON
#   PERF_DIR=target/perf bash benches/load.sh   # also `perf record` the server in every phase
#                                               # (its CPU figures then include perf's own cost;
#                                               # PERF_CALL_GRAPH=none: flat samples, cheaper)
#   PERF_STAT=1 bash benches/load.sh            # also count the server's system calls, wake-ups,
#                                               # context switches and page faults per request
#
# What it does:
#   1. cargo build --profile dist --bin pullsecret-injector --examples
#   2. dev certificates (pullsecret-injector dev-certs), a GCP service-account key made now (openssl), a
#      config with a gcpJsonKey credential source (so the provisioner runs and talks to the API);
#   3. starts examples/fake_api_server (the test suite's fake Kubernetes API, RBAC on, gcr-pull allowed,
#      namespaces team-a and team-0..team-7 existing) with a kubeconfig, the webhook (`serve`,
#      KUBECONFIG pointing at the fake) and
#      examples/noop_webhook (same TLS stack and certificate, answers a fixed "allowed" review);
#   4. the first review provisions the Secret in team-a; warm-up provisions team-0..team-7;
#   5. for the webhook and the baseline alternately, with examples/loadgen (HTTP/1.1 keep-alive over TLS):
#        max throughput, 32 connections, 8 rounds of 5 s each  (pod-create-direct.json, namespace team-a)
#        latency at 1,000 req/s, 16 connections, 20 s (same review)
#        max throughput, 32 connections, 8 rounds of 4 s each  (mix: 4 Pod CREATE reviews x 8 namespaces)
#        latency at 1,000 req/s, 16 connections, 8 s (same mix)
#      sampling VmRSS of the server every 200 ms (bash builtins only, no fork next to the server) and
#      its CPU time (utime + stime from /proc/<pid>/stat) over the phase;
#   6. prints the table: throughput ratio webhook/baseline (the median of the rounds' ratios; every
#      round's figures are printed as it ends), server CPU µs per review (median of the rounds), latency
#      percentiles, RSS at start/idle/peak, and the API calls the fake API saw during the steady-state
#      phases (from its /_stats endpoint).
# Throughput and latency depend on whatever else runs on the machine (the load client shares the
# cores with the servers); compare the two servers within one run, and repeat runs.
# All processes started here are stopped on exit. Every load phase is bounded by its duration.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

MAX_SECONDS=${MAX_SECONDS:-5}
# Max-throughput phases run in rounds, the two servers alternating (webhook first in odd rounds,
# the no-op first in even ones): on a shared machine one phase each is a coin toss. Eight, because
# one binary against itself (benches/compare.sh) still gave a median of 0.96 over eight rounds.
ROUNDS=${ROUNDS:-8}
RATE_SECONDS=${RATE_SECONDS:-20}
MIX_SECONDS=${MIX_SECONDS:-4}
RATE=${RATE:-1000}
MAX_CONNECTIONS=${MAX_CONNECTIONS:-32}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-16}
LOADGEN_THREADS=${LOADGEN_THREADS:-2}
WEBHOOK_LOG=${WEBHOOK_LOG:-info}
PERF_STAT_EVENTS=${PERF_STAT_EVENTS:-task-clock,context-switches,cpu-migrations,page-faults,sched:sched_wakeup,raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_recvfrom,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto}

if [ -z "${SKIP_BUILD:-}" ]; then
  cargo build --profile dist --bin pullsecret-injector --examples
fi
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/dist/pullsecret-injector
EX=$TARGET_DIR/dist/examples
for f in "$BIN" "$EX/loadgen" "$EX/noop_webhook" "$EX/fake_api_server"; do
  [ -x "$f" ] || { echo "load.sh: $f is missing (build first)" >&2; exit 1; }
done
command -v openssl >/dev/null || { echo "load.sh: openssl is needed" >&2; exit 1; }
command -v curl >/dev/null || { echo "load.sh: curl is needed" >&2; exit 1; }
command -v jq >/dev/null || { echo "load.sh: jq is needed" >&2; exit 1; }

HARNESS=load.sh
# shellcheck source=benches/support/harness.sh
. benches/support/harness.sh

# ---- inputs ---------------------------------------------------------------------------------------
write_inputs "$BIN"
FIX=tests/fixtures/admission-reviews
DIRECT=$FIX/pod-create-direct.json
MIX=(--body "$FIX/pod-create-direct.json" --body "$FIX/pod-create-from-deployment.json"
     --body "$FIX/pod-create-existing-pull-secret.json" --body "$FIX/pod-create-dry-run.json"
     --namespaces 8 --namespace-prefix team-)

# ---- processes ------------------------------------------------------------------------------------
# The namespaces the reviews name: team-a (the fixtures) and team-0..team-7 (the mix).
start_fake_api team-a team-{0..7}

WEBHOOK_PORT=$(free_port)
start_webhook "$BIN" "$WEBHOOK_PORT" "$TMP/webhook.log" "$WEBHOOK_LOG"
WEBHOOK_PID=$!

NOOP_PORT=$(free_port "$WEBHOOK_PORT")
start_noop "$NOOP_PORT" "$TMP/noop.log"
NOOP_PID=$!

wait_https "$WEBHOOK_PORT" /readyz "$TMP/webhook.log" "$TMP/noop.log"
wait_https "$NOOP_PORT" / "$TMP/webhook.log" "$TMP/noop.log"
sleep 1

# Read with bash builtins only: the sampler must not fork a process every 200 ms next to the server.
rss_kib() {
  local key value _
  while read -r key value _; do
    if [ "$key" = "VmRSS:" ]; then echo "$value"; return 0; fi
  done <"/proc/$1/status"
  echo 0
}
mkfifo "$TMP/pause.fifo"
exec 9<>"$TMP/pause.fifo"
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
stat_field() { curl -s "$STATS_URL" | jq -r "$1"; }

WEBHOOK_RSS_START=$(rss_kib "$WEBHOOK_PID")
NOOP_RSS_START=$(rss_kib "$NOOP_PID")

loadgen() { # port out-file loadgen-args...
  local port=$1 out=$2
  shift 2
  "$EX/loadgen" --target "127.0.0.1:$port" --ca "$TMP/certs/ca.crt" --threads "$LOADGEN_THREADS" --json "$@" >"$out"
}

# Runs a phase against one server while sampling its RSS; leaves the JSON in $TMP/<name>.json and the
# peak sampled RSS (KiB) in $TMP/<name>.rss.
phase() { # name pid port loadgen-args...
  local name=$1 pid=$2 port=$3
  shift 3
  local peak=0 rss cpu0 cpu1
  cpu0=$(cpu_ticks "$pid")
  loadgen "$port" "$TMP/$name.json" --label "$name" "$@" &
  local lg=$!
  local perf_pid=
  if [ -n "${PERF_DIR:-}" ]; then
    # Samples the server (call graphs by frame pointer are unreliable here: DWARF unwinding;
    # PERF_CALL_GRAPH=none samples without call graphs, at a fraction of the cost).
    local call_graph=(--call-graph "${PERF_CALL_GRAPH:-dwarf,16384}")
    [ "${PERF_CALL_GRAPH:-}" = none ] && call_graph=()
    perf record -q -F "${PERF_FREQ:-1999}" "${call_graph[@]}" -p "$pid" \
      -o "$PERF_DIR/$name.data" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  local stat_pid=
  if [ -n "${PERF_STAT:-}" ]; then
    perf stat -x, -e "$PERF_STAT_EVENTS" -p "$pid" -o "$TMP/$name.perfstat" >/dev/null 2>&1 &
    stat_pid=$!
  fi
  while kill -0 "$lg" 2>/dev/null; do
    rss_kib "$pid" >"$TMP/rss.now"
    read -r rss <"$TMP/rss.now"
    [ "$rss" -gt "$peak" ] && peak=$rss
    read -r -t 0.2 -u 9 _ || true # a 200 ms pause without forking sleep(1)
  done
  wait "$lg"
  cpu1=$(cpu_ticks "$pid")
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
  fi
  if [ -n "$stat_pid" ]; then
    kill -INT "$stat_pid" 2>/dev/null || true
    wait "$stat_pid" 2>/dev/null || true
  fi
  echo "$peak" >"$TMP/$name.rss"
  # Server CPU time (user + system) per answered request, in µs.
  jq -r --argjson t "$((cpu1 - cpu0))" --argjson hz "$CLK_TCK" '$t * 1000000 / $hz / .requests' "$TMP/$name.json" >"$TMP/$name.cpu"
  jq -r --arg cpu "$(cat "$TMP/$name.cpu")" '"  \(.label): \(.rps|floor) req/s, \(.requests) requests, errors \(.errors), non-200 \(.non_200), p50 \(.latency_us.p50) µs, p99 \(.latency_us.p99) µs, p99.9 \(.latency_us.p999) µs, max \(.latency_us.max) µs, server CPU \($cpu|tonumber|floor) µs/request"' "$TMP/$name.json"
  if [ -n "$stat_pid" ]; then
    # perf stat -x, lines: count,unit,event,... ; printed per answered request.
    awk -F, -v n="$(jq .requests "$TMP/$name.json")" \
      '$1 ~ /^[0-9]/ {printf "    %-34s %8.2f per request\n", $3, $1 / n}' "$TMP/$name.perfstat"
  fi
}

# ---- provisioning and warm-up ---------------------------------------------------------------------
echo "first review in team-a (provisions the pull Secret):"
loadgen "$WEBHOOK_PORT" "$TMP/first.json" --label first --max --requests 1 --connections 1 --duration 10s --body "$DIRECT"
FIRST_US=$(jq '.latency_us.max' "$TMP/first.json")
FIRST_CREATES=$(stat_field '.by_verb.create')
echo "  answered in $FIRST_US µs; the fake API saw $(stat_field '.total') requests, $FIRST_CREATES create"

echo "warm-up (also provisions team-0..team-7):"
loadgen "$WEBHOOK_PORT" "$TMP/warm1.json" --max --duration 3s --connections "$MAX_CONNECTIONS" "${MIX[@]}"
loadgen "$WEBHOOK_PORT" "$TMP/warm2.json" --max --duration 2s --connections "$MAX_CONNECTIONS" --body "$DIRECT"
loadgen "$NOOP_PORT" "$TMP/warm3.json" --max --duration 2s --connections "$MAX_CONNECTIONS" --body "$DIRECT"
sleep 1
SECRETS_AFTER_WARMUP=$(stat_field '.secrets')
WEBHOOK_RSS_IDLE=$(rss_kib "$WEBHOOK_PID")
NOOP_RSS_IDLE=$(rss_kib "$NOOP_PID")
STATS_BEFORE=$(curl -s "$STATS_URL")
echo "  ${SECRETS_AFTER_WARMUP} pull Secrets exist; webhook RSS $(mib "$WEBHOOK_RSS_IDLE") MiB idle"

# ---- steady state ---------------------------------------------------------------------------------
echo "steady state:"
# Runs the max-throughput phases in $ROUNDS alternating rounds, then sums them up in <name>.json
# (median req/s, summed counts), <name>.cpu (median), <name>.rss (peak) and <name>.ratios.
rounds() { # name loadgen-args...
  local name=$1 r
  shift
  for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
      phase "webhook_${name}_$r" "$WEBHOOK_PID" "$WEBHOOK_PORT" "$@"
      phase "noop_${name}_$r" "$NOOP_PID" "$NOOP_PORT" "$@"
    else
      phase "noop_${name}_$r" "$NOOP_PID" "$NOOP_PORT" "$@"
      phase "webhook_${name}_$r" "$WEBHOOK_PID" "$WEBHOOK_PORT" "$@"
    fi
    echo "$(ratio "$(j "webhook_${name}_$r" .rps)" "$(j "noop_${name}_$r" .rps)")" >>"$TMP/$name.ratios"
  done
  local server files
  for server in webhook noop; do
    files=()
    for r in $(seq 1 "$ROUNDS"); do files+=("$TMP/${server}_${name}_$r.json"); done
    jq -s --arg phase "${server}_$name" '
      def median: sort | if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end;
      {label: $phase, rounds: length, rps: (map(.rps) | median), rps_rounds: map(.rps),
       requests: (map(.requests) | add), errors: (map(.errors) | add), non_200: (map(.non_200) | add),
       not_allowed: (map(.not_allowed) | add), body_bytes_first: .[0].body_bytes_first}' \
      "${files[@]}" >"$TMP/${server}_$name.json"
    for r in $(seq 1 "$ROUNDS"); do cat "$TMP/${server}_${name}_$r.cpu"; done |
      sort -g | awk '{v[NR] = $1} END {print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}' >"$TMP/${server}_$name.cpu"
    for r in $(seq 1 "$ROUNDS"); do cat "$TMP/${server}_${name}_$r.rss"; done | sort -n | tail -1 >"$TMP/${server}_$name.rss"
  done
}
median_of() { sort -g "$1" | awk '{v[NR] = $1} END {printf "%.2f", (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2)}'; }
j() { jq -r "$2" "$TMP/$1.json"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

rounds max --max --duration "${MAX_SECONDS}s" --connections "$MAX_CONNECTIONS" --body "$DIRECT"
phase webhook_rate "$WEBHOOK_PID" "$WEBHOOK_PORT" --rate "$RATE" --duration "${RATE_SECONDS}s" --connections "$RATE_CONNECTIONS" --body "$DIRECT"
phase noop_rate "$NOOP_PID" "$NOOP_PORT" --rate "$RATE" --duration "${RATE_SECONDS}s" --connections "$RATE_CONNECTIONS" --body "$DIRECT"
rounds mix_max --max --duration "${MIX_SECONDS}s" --connections "$MAX_CONNECTIONS" "${MIX[@]}"
phase webhook_mix_rate "$WEBHOOK_PID" "$WEBHOOK_PORT" --rate "$RATE" --duration "${MIX_SECONDS}s" --connections "$RATE_CONNECTIONS" "${MIX[@]}"
phase noop_mix_rate "$NOOP_PID" "$NOOP_PORT" --rate "$RATE" --duration "${MIX_SECONDS}s" --connections "$RATE_CONNECTIONS" "${MIX[@]}"
STATS_AFTER=$(curl -s "$STATS_URL")
sleep 1
WEBHOOK_RSS_AFTER=$(rss_kib "$WEBHOOK_PID")
WEBHOOK_HWM=$(hwm_kib "$WEBHOOK_PID")
NOOP_HWM=$(hwm_kib "$NOOP_PID")

# ---- report ---------------------------------------------------------------------------------------
peak_of() { local m=0 v; for n in "$@"; do v=$(cat "$TMP/$n.rss"); [ "$v" -gt "$m" ] && m=$v; done; echo "$m"; }
ms() { awk -v u="$1" 'BEGIN {printf "%.3f", u / 1000}'; }
verdict() { if awk -v v="$1" -v t="$3" -v op="$2" 'BEGIN {exit !((op == "<=") ? (v <= t) : (v >= t))}'; then echo "met"; else echo "MISSED"; fi; }

API_CALLS=$(jq -n --argjson a "$STATS_BEFORE" --argjson b "$STATS_AFTER" '$b.total - $a.total')
API_PER_REQUEST=$(jq -n --argjson a "$STATS_BEFORE" --argjson b "$STATS_AFTER" '$b.per_request_calls - $a.per_request_calls')
API_WRITES=$(jq -n --argjson a "$STATS_BEFORE" --argjson b "$STATS_AFTER" '$b.writes - $a.writes')
STEADY_REQUESTS=0
for n in webhook_max webhook_rate webhook_mix_max webhook_mix_rate; do
  STEADY_REQUESTS=$((STEADY_REQUESTS + $(j "$n" .requests)))
done
ERRORS=0
for n in webhook_max noop_max webhook_rate noop_rate webhook_mix_max noop_mix_max webhook_mix_rate noop_mix_rate; do
  ERRORS=$((ERRORS + $(j "$n" .errors) + $(j "$n" .non_200) + $(j "$n" .not_allowed)))
done

W_PEAK=$(peak_of webhook_max webhook_rate webhook_mix_max webhook_mix_rate)
N_PEAK=$(peak_of noop_max noop_rate noop_mix_max noop_mix_rate)
R_MAX=$(median_of "$TMP/max.ratios")
R_MIX=$(median_of "$TMP/mix_max.ratios")
W_P99=$(j webhook_rate .latency_us.p99)

echo
echo "machine: $(nproc) cores, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "review: $DIRECT (team-a, $(j webhook_max .body_bytes_first) bytes compact); mix: 4 Pod CREATE reviews x 8 namespaces"
printf '\n%-44s %14s %14s %10s %s\n' "" "webhook" "baseline" "ratio" "target"
printf '%-44s %14.0f %14.0f %10s %s\n' "max req/s, $MAX_CONNECTIONS conns (direct), median" "$(j webhook_max .rps)" "$(j noop_max .rps)" "$R_MAX" "median ratio >= 0.55: $(verdict "$R_MAX" '>=' 0.55)"
printf '%-44s %14.0f %14.0f %10s\n' "max req/s, $MAX_CONNECTIONS conns (mix), median" "$(j webhook_mix_max .rps)" "$(j noop_mix_max .rps)" "$R_MIX"
printf '%-44s %s\n' "  ratio in each round (direct)" "$(paste -sd' ' "$TMP/max.ratios")"
printf '%-44s %s\n' "  ratio in each round (mix)" "$(paste -sd' ' "$TMP/mix_max.ratios")"
cpu() { awk -v v="$(cat "$TMP/$1.cpu")" 'BEGIN {printf "%.1f", v}'; }
printf '%-44s %14s %14s %10s %s\n' "server CPU µs/review, max (direct), median" "$(cpu webhook_max)" "$(cpu noop_max)" "$(ratio "$(cpu webhook_max)" "$(cpu noop_max)")" ""
printf '%-44s %14s %14s %10s %s\n' "server CPU µs/review, max (mix), median" "$(cpu webhook_mix_max)" "$(cpu noop_mix_max)" "$(ratio "$(cpu webhook_mix_max)" "$(cpu noop_mix_max)")" ""
printf '%-44s %14s %14s %10s %s\n' "server CPU µs per review at $RATE req/s" "$(cpu webhook_rate)" "$(cpu noop_rate)" "$(ratio "$(cpu webhook_rate)" "$(cpu noop_rate)")" ""
for q in p50 p90 p99 p999 max; do
  printf '%-44s %14s %14s %10s %s\n' "latency $q ms at $RATE req/s, $RATE_CONNECTIONS conns" \
    "$(ms "$(j webhook_rate .latency_us.$q)")" "$(ms "$(j noop_rate .latency_us.$q)")" \
    "$(ratio "$(j webhook_rate .latency_us.$q)" "$(j noop_rate .latency_us.$q)")" \
    "$([ "$q" = p99 ] && echo "webhook p99 <= 1 ms: $(verdict "$W_P99" '<=' 1000)")"
done
for q in p50 p99 p999; do
  printf '%-44s %14s %14s %10s\n' "latency $q ms at $RATE req/s (mix)" \
    "$(ms "$(j webhook_mix_rate .latency_us.$q)")" "$(ms "$(j noop_mix_rate .latency_us.$q)")" \
    "$(ratio "$(j webhook_mix_rate .latency_us.$q)" "$(j noop_mix_rate .latency_us.$q)")"
done
printf '%-44s %14s %14s %10s %s\n' "achieved req/s in the $RATE req/s phase" "$(j webhook_rate '.rps|floor')" "$(j noop_rate '.rps|floor')" "" ""
printf '%-44s %14s %14s %10s %s\n' "RSS MiB at start (before any request)" "$(mib "$WEBHOOK_RSS_START")" "$(mib "$NOOP_RSS_START")" "" ""
printf '%-44s %14s %14s %10s %s\n' "RSS MiB idle (after provisioning, warm-up)" "$(mib "$WEBHOOK_RSS_IDLE")" "$(mib "$NOOP_RSS_IDLE")" "" "webhook <= 16 MiB: $(verdict "$(mib "$WEBHOOK_RSS_IDLE")" '<=' 16)"
printf '%-44s %14s %14s %10s %s\n' "RSS MiB peak sampled under load" "$(mib "$W_PEAK")" "$(mib "$N_PEAK")" "" "webhook <= 32 MiB: $(verdict "$(mib "$W_PEAK")" '<=' 32)"
printf '%-44s %14s %14s %10s %s\n' "VmHWM MiB (peak since start)" "$(mib "$WEBHOOK_HWM")" "$(mib "$NOOP_HWM")" "" ""
printf '%-44s %14s %14s %10s %s\n' "RSS MiB after the load phases" "$(mib "$WEBHOOK_RSS_AFTER")" "" "" ""
printf '%-44s %14s %14s %10s %s\n' "API calls during steady state" "$API_CALLS" "" "" "target 0: $(verdict "$API_CALLS" '<=' 0)"
echo
echo "steady state: $STEADY_REQUESTS webhook reviews; fake API saw $API_CALLS requests ($API_PER_REQUEST outside list/watch, $API_WRITES writes)"
echo "first review (provisioning team-a): $(ms "$FIRST_US") ms, $FIRST_CREATES create; pull Secrets after warm-up: $SECRETS_AFTER_WARMUP"
echo "errors + non-200 + not-allowed answers over all phases: $ERRORS"
echo "rbac violations seen by the fake API: $(stat_field '.rbac_violations')"
for n in webhook_rate noop_rate webhook_mix_rate noop_mix_rate; do
  echo "$n: due-while-busy $(j "$n" .queued), max timer lag $(j "$n" .schedule_lag_max_us) µs"
done

if [ -n "${OUT:-}" ]; then
  {
    echo '{'
    for n in first webhook_max noop_max webhook_rate noop_rate webhook_mix_max noop_mix_max webhook_mix_rate noop_mix_rate; do
      echo "\"$n\": $(cat "$TMP/$n.json"),"
      [ -f "$TMP/$n.cpu" ] && echo "\"${n}_cpu_us_per_request\": $(cat "$TMP/$n.cpu"),"
    done
    echo "\"stats_before\": $STATS_BEFORE, \"stats_after\": $STATS_AFTER,"
    echo "\"rss_kib\": {\"webhook_start\": $WEBHOOK_RSS_START, \"webhook_idle\": $WEBHOOK_RSS_IDLE, \"webhook_peak\": $W_PEAK, \"webhook_hwm\": $WEBHOOK_HWM, \"webhook_after\": $WEBHOOK_RSS_AFTER, \"noop_start\": $NOOP_RSS_START, \"noop_idle\": $NOOP_RSS_IDLE, \"noop_peak\": $N_PEAK, \"noop_hwm\": $NOOP_HWM}"
    echo '}'
  } | jq . >"$OUT"
  echo "raw results: $OUT"
fi
