#!/usr/bin/env bash
# Where the webhook's throughput goes, step by step: builds of the committed source that stop after
# one more step of the review path and send the no-op's fixed answer, each driven against the no-op
# baseline with benches/compare.sh.
#
#   bash benches/ladder.sh [rounds]        # from the repository root; ~20 min with the builds
#
# The steps (benches/ladder/*.patch, applied to HEAD in a scratch worktree):
#   1-read-body-only     the body is read, nothing else: the transport alone
#   2-parse-only         ... and parsed (admission::parse_review_into)
#   3-answer-not-sent    ... decided and answered, but the fixed answer is sent instead of it, and no
#                        metric or log call is made
#   and the release build of HEAD itself: the whole path.
# Each entry of the summary is one `compare.sh noop BUILD` run: the median ratio of req/s over the
# alternating rounds, the median server CPU per review of both, and the whole machine's user and
# kernel time per review while each ran. The ratios of one run share a
# machine state; compare steps within a run, not across runs.
#
# Environment: as for benches/compare.sh (SECONDS_PER_PHASE, CONNECTIONS, LOADGEN_THREADS, CLIENT).
set -euo pipefail

ROUNDS=${1:-8}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET_DIR=$(realpath -m -- "${CARGO_TARGET_DIR:-target}")
LADDER_TARGET=$TARGET_DIR/ladder
TMP=$(mktemp -d "${TMPDIR:-/tmp}/psi-ladder.XXXXXX")
WORKTREE=$TMP/worktree
cleanup() {
  git -C "$ROOT" worktree remove --force "$WORKTREE" 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cargo build --release --bin pullsecret-injector --examples
mkdir -p "$TMP/bin"
cp "$TARGET_DIR/release/pullsecret-injector" "$TMP/bin/4-whole-path"

git worktree add --quiet --detach "$WORKTREE" HEAD
STEPS=()
for patch in benches/ladder/*.patch; do
  step=$(basename "$patch" .patch)
  git -C "$WORKTREE" checkout --quiet -- .
  if ! git -C "$WORKTREE" apply "$ROOT/$patch"; then
    echo "ladder.sh: $patch no longer applies to HEAD; update it" >&2
    exit 1
  fi
  # One target directory for every step: only this crate is built again each time.
  (cd "$WORKTREE" && CARGO_TARGET_DIR=$LADDER_TARGET cargo build --release --quiet --bin pullsecret-injector)
  cp "$LADDER_TARGET/release/pullsecret-injector" "$TMP/bin/$step"
  STEPS+=("$step")
done
STEPS+=(4-whole-path)

: >"$TMP/summary"
for step in "${STEPS[@]}"; do
  echo "== $step"
  bash benches/compare.sh noop "$TMP/bin/$step" "$ROUNDS" | tee "$TMP/$step.out"
  grep -q '^median B/A' "$TMP/$step.out" || { echo "ladder.sh: no result for $step" >&2; exit 1; }
  { echo "$step"; grep '^median' "$TMP/$step.out" | sed 's/^/  /'; } >>"$TMP/summary"
done
echo
echo "every step against the no-op (A = the no-op, B = the step's build):"
cat "$TMP/summary"
