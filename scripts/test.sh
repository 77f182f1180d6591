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
RUST_TEST_THREADS=${RUST_TEST_THREADS:-2} cargo test --locked --all-targets
