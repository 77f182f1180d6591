#!/usr/bin/env bash
# The test command: brings the local stack up if it is not running, runs fmt, clippy and every
# test against it, and stops the stack again if this script started it.
#
#   scripts/test.sh           reuse a running stack, or start one
#   scripts/test.sh --fresh   stop any running stack first and start a new one (CI's situation)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

case "${1:-}" in
  "") ;;
  --fresh) scripts/stack.sh down >/dev/null 2>&1 || true ;;
  *) echo "usage: scripts/test.sh [--fresh]" >&2; exit 2 ;;
esac

started=0
if ! scripts/stack.sh status >/dev/null 2>&1; then
  scripts/stack.sh up >/dev/null
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then scripts/stack.sh down >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT
# Not `eval "$(…)"`: that succeeds when the command inside fails, and the tests would run without
# the stack's addresses.
stack_env=$(scripts/stack.sh env) || { echo "test.sh: the stack's addresses could not be read" >&2; exit 1; }
eval "$stack_env"

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# Examples are compiled and linted by clippy above; they are programs, not tests.
log=$(mktemp)
set +e
# --no-fail-fast: one failing test binary must not hide the results of the others.
# The output goes to a file that is followed, not through a pipe: a process a test leaked would
# hold a pipe open and hang the run. A whole-run limit turns any hang into a red run that says so.
limit=${DUAL_INDEXER_TEST_TIMEOUT_SECS:-4500}
# Every process of this run inherits this mark, so leftovers are found by it, and nothing else
# (an indexer you run by hand, another test run) is touched.
run_mark="$$-$(date +%s%N)"
DUAL_INDEXER_TEST_RUN=$run_mark RUST_TEST_THREADS=${RUST_TEST_THREADS:-2} timeout -k 30 "$limit" \
  cargo test --locked --no-fail-fast --lib --bins --tests --benches >"$log" 2>&1 &
tests=$!
tail -n +1 -f --pid="$tests" "$log"
wait "$tests"
status=$?
set -e
if [ "$status" = 124 ]; then
  echo "test.sh: the tests did not finish within ${limit} s (DUAL_INDEXER_TEST_TIMEOUT_SECS)" >&2
fi
# Every process a test starts is killed when the test ends, pass or fail. Any of this run still
# running now is a defect in the tests: name it, stop it, and fail the run.
leaked=$(grep -lsxz "DUAL_INDEXER_TEST_RUN=$run_mark" /proc/[0-9]*/environ | cut -d/ -f3 || true)
if [ -n "$leaked" ]; then
  echo "test.sh: tests left processes running; stopping them:" >&2
  ps -o pid=,args= -p "$(echo "$leaked" | paste -sd,)" >&2 || true
  kill $leaked 2>/dev/null || true
  status=1
fi
# One closing line over every test binary, so the total is not hidden among per-binary lines.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
