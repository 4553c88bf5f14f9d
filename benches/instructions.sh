#!/usr/bin/env bash
# Instructions per review of the pure admission path (parse_review + answer + serialized response),
# counted by callgrind: deterministic, unlike wall-clock time on a shared 2-core machine.
#
#   bash benches/instructions.sh            # from the repository root; needs valgrind
#
# Runs the criterion bench binary in its plain-loop mode (BENCH_LOOP=N BENCH_CASE=...) with 10 and
# 1,010 iterations and prints (Ir(1010) - Ir(10)) / 1000 for every case; then the same for each
# reader of benches/readers.rs (the webhook's parse_review against general JSON readers), with each
# one's ratio to the webhook's reader.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
bench_binary() {
  cargo bench --bench "$1" --no-run --message-format=json 2>/dev/null |
    jq -r --arg name "$1" 'select(.reason == "compiler-artifact" and .target.name == $name and .executable != null) | .executable' | tail -1
}
BIN=$(bench_binary admission)
READERS_BIN=$(bench_binary readers)
[ -x "$BIN" ] && [ -x "$READERS_BIN" ] || { echo "instructions.sh: bench binary not found" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
count() { # case iterations [binary]
  BENCH_CASE=$1 BENCH_LOOP=$2 valgrind --tool=callgrind --callgrind-out-file="$TMP/out" "${3:-$BIN}" 2>&1 |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-16s %14s\n' case "instructions/review"
for c in typical typical_images_unseen no_match skip_namespace skip_label containers_1 containers_10 containers_100; do
  a=$(count "$c" 10)
  b=$(count "$c" 1010)
  printf '%-16s %14d\n' "$c" $(((b - a) / 1000))
done
echo
printf '%-20s %14s %10s\n' reader "instructions/read" "ratio"
base=
for c in pullsecret_injector serde_json_view sonic_rs_view kube_typed_pod serde_json_value; do
  a=$(count "$c" 10 "$READERS_BIN")
  b=$(count "$c" 1010 "$READERS_BIN")
  n=$(((b - a) / 1000))
  base=${base:-$n}
  printf '%-20s %14d %10s\n' "$c" "$n" "$(awk -v n="$n" -v b="$base" 'BEGIN { printf "%.2f", n / b }')"
done
