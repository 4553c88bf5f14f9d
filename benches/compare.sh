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

TMP=$(mktemp -d "${TMPDIR:-/tmp}/psi-compare.XXXXXX")
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  local port
  for _ in $(seq 1 50); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "compare.sh: no free port found" >&2
  return 1
}

# The same inputs as benches/load.sh: dev certificates, a key made now, a gcpJsonKey credential.
"$A" dev-certs --out "$TMP/certs" >/dev/null
mkdir -p "$TMP/credentials" "$TMP/config"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$TMP/sa.pem" 2>/dev/null
PRIVATE_KEY=$(awk '{printf "%s\\n", $0}' "$TMP/sa.pem")
cat >"$TMP/credentials/key.json" <<EOF
{"type": "service_account", "project_id": "acme-prod",
 "private_key_id": "0123456789abcdef0123456789abcdef01234567", "private_key": "$PRIVATE_KEY",
 "client_email": "puller@acme-prod.iam.gserviceaccount.com", "client_id": "104",
 "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": "https://oauth2.googleapis.com/token"}
EOF
cat >"$TMP/config/config.yaml" <<EOF
registries:
  - name: gcp
    preset: gcp
    secretName: gcr-pull
    credentials:
      gcpJsonKey: { file: $TMP/credentials/key.json }
skipNamespaces: [kube-system, kube-node-lease]
provisioning:
  budget: 2s
EOF
REVIEW=tests/fixtures/admission-reviews/pod-create-direct.json

"$EX/fake_api_server" --kubeconfig "$TMP/kubeconfig" gcr-pull >"$TMP/fake.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do grep -q '^STATS_URL=' "$TMP/fake.log" 2>/dev/null && break; sleep 0.1; done
grep -q '^STATS_URL=' "$TMP/fake.log" || { echo "compare.sh: fake API did not start" >&2; cat "$TMP/fake.log" >&2; exit 1; }

start() { # binary port; started in this shell, so that cleanup can wait for it
  env -u KUBERNETES_SERVICE_HOST -u KUBERNETES_SERVICE_PORT KUBECONFIG="$TMP/kubeconfig" RUST_LOG=info \
    "$1" serve --config "$TMP/config/config.yaml" --tls-dir "$TMP/certs" --listen "127.0.0.1:$2" \
    >"$TMP/$2.log" 2>&1 &
}
PORT_A=$(free_port)
start "$A" "$PORT_A"
PID_A=$!
PIDS+=("$PID_A")
PORT_B=$(free_port)
while [ "$PORT_B" = "$PORT_A" ]; do PORT_B=$(free_port); done
start "$B" "$PORT_B"
PID_B=$!
PIDS+=("$PID_B")
for port in "$PORT_A" "$PORT_B"; do
  ready=
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null --cacert "$TMP/certs/ca.crt" "https://127.0.0.1:$port/readyz"; then ready=1; break; fi
    sleep 0.1
  done
  [ -n "$ready" ] || { echo "compare.sh: nothing answers on 127.0.0.1:$port" >&2; cat "$TMP/$port.log" >&2; exit 1; }
done
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
