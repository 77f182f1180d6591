#!/usr/bin/env bash
# The test command: brings the local stack up if it is not running, runs fmt, clippy and every
# test against it, and stops the stack again if this script started it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

started=0
if ! scripts/stack.sh status >/dev/null 2>&1; then
  scripts/stack.sh up >/dev/null
  started=1
fi
cleanup() { if [ "$started" = 1 ]; then scripts/stack.sh down >/dev/null 2>&1 || true; fi; }
trap cleanup EXIT
eval "$(scripts/stack.sh env)"

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
# Examples are compiled and linted by clippy above; they are programs, not tests.
log=$(mktemp)
set +e
# --no-fail-fast: one failing test binary must not hide the results of the others.
RUST_TEST_THREADS=${RUST_TEST_THREADS:-2} cargo test --locked --no-fail-fast --lib --bins --tests --benches 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary, so the total is not hidden among per-binary lines.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "all tests: %d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
exit "$status"
