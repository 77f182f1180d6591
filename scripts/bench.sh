#!/usr/bin/env bash
# The benchmarks, and the figures docs/benchmarks.md publishes, from one command:
#
#   scripts/bench.sh                      hot path and end to end, for the checked-out commit
#   scripts/bench.sh --against REV        the same for REV too, interleaved, on the same machine
#   scripts/bench.sh --e2e-runs N         end-to-end runs per commit (default 3)
#   scripts/bench.sh --hot-path-only      skip the end-to-end runs (no stack needed)
#
# Absolute rates on a shared 2-core machine are noise; the script prints the ratios (to the
# baseline in the same criterion run, to the stand-in's raw bulk capacity in the same e2e run) and
# the commits they were measured on, as a Markdown table. REV is built from a git worktree outside
# the clone (cached under ~/.cache/dual-indexer/bench), sharing this clone's target directory, so
# only the crate itself is rebuilt. The end-to-end runs need the local stack (scripts/stack.sh up).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

against="" e2e_runs=3 hot_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --against) against=${2:?--against needs a revision}; shift 2 ;;
    --e2e-runs) e2e_runs=${2:?--e2e-runs needs a number}; shift 2 ;;
    --hot-path-only) hot_only=1; shift ;;
    *) echo "usage: scripts/bench.sh [--against REV] [--e2e-runs N] [--hot-path-only]" >&2; exit 2 ;;
  esac
done

cache=${DUAL_INDEXER_CACHE:-$HOME/.cache/dual-indexer}/bench
mkdir -p "$cache"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
head_rev=$(git rev-parse --short HEAD)
dirty=""
git diff --quiet HEAD -- src benches examples Cargo.toml Cargo.lock || dirty="+uncommitted"

# Builds the release binary, the e2e harness, and the hot-path bench of the tree at $1 (a
# directory), and keeps a copy of the binary named $2.
build() {
  local tree=$1 name=$2
  (cd "$tree" && cargo build --release --locked --bin dual-indexer --quiet)
  cp "$CARGO_TARGET_DIR/release/dual-indexer" "$cache/dual-indexer-$name"
}

# Runs the hot-path bench of the tree at $1 and prints "10_tags <rate> <baseline rate>" lines.
hot_path() {
  local tree=$1 out
  out=$(cd "$tree" && cargo bench --locked --bench pipeline 2>/dev/null)
  echo "$out" | awk '
    /^decode_transform_serialize\// { name = $1; sub(/.*\//, "", name) }
    /thrpt:/ && name != "" {
      rate = $(NF-3); unit = $(NF-2)
      if (unit ~ /^K/) rate *= 1e3; else if (unit ~ /^M/) rate *= 1e6
      rates[name] = rate; name = ""
    }
    END {
      for (n in rates) {
        if (n ~ /baseline/) continue
        if (n ~ /_mapped_/) { base = n; sub(/_mapped_.*/, "", base); printf "%s %.0f %.0f\n", n, rates[n], rates[base] }
        else printf "%s %.0f %.0f\n", n, rates[n], rates[n "_baseline_serde_value_roundtrip"]
      }
    }' | sort
}

# One end-to-end run of the binary named $1: prints "<ratio> <steady ratio> <us/command> <RSS MB>".
e2e() {
  local out
  out=$("$CARGO_TARGET_DIR/release/examples/e2e_bench" --indexer "$cache/dual-indexer-$1" --count 40000 --ids 20000 2>/dev/null)
  echo "$out" | awk '
    /^ratio/ { r = $2 }
    /^steady rate/ { s2 = $(NF-1); gsub(/[()x]/, "", s2) }
    /^indexer CPU/ { c = $5; gsub(/[(]/, "", c) }
    /^indexer peak RSS/ { m = $4 }
    END { sub(/x$/, "", r); printf "%s %s %s %s\n", r, s2, c, m }'
}

revs=("$head_rev$dirty")
trees=("$ROOT")
if [ -n "$against" ]; then
  against_rev=$(git rev-parse --short "$against")
  worktree="$cache/worktree-$against_rev"
  [ -d "$worktree" ] || git worktree add --detach "$worktree" "$against_rev" >/dev/null
  revs+=("$against_rev")
  trees+=("$worktree")
fi

echo "building ${revs[*]} …" >&2
for i in "${!revs[@]}"; do build "${trees[$i]}" "${revs[$i]}"; done
# The e2e harness of this tree drives every binary, so only the indexer differs.
cargo build --release --locked --example e2e_bench --quiet

echo >&2
echo "hot path (cargo bench --bench pipeline), interleaved …" >&2
declare -A hot
for i in "${!revs[@]}"; do hot[${revs[$i]}]=$(hot_path "${trees[$i]}"); done
echo
echo "Hot path, measured $(date -u +%Y-%m-%d) on $(nproc) cores:"
echo
echo "| commit | commands with | dual-indexer | baseline (serde_json::Value round trip) | ratio |"
echo "|---|---|---|---|---|"
for rev in "${revs[@]}"; do
  while read -r name rate base; do
    [ -n "$name" ] && [[ "$name" != *_mapped_* ]] || continue
    awk -v c="$rev" -v n="$name" -v r="$rate" -v b="$base" 'BEGIN {
      sub(/_tags/, " tags", n); printf "| %s | %s | %.0fk/s | %.0fk/s | %.2fx |\n", c, n, r / 1e3, b / 1e3, r / b }'
  done <<<"${hot[$rev]}"
done
echo
echo "Envelope mapping (docs/envelope.md), same run: the mapped path against the built-in envelope."
echo "same_payloads reads built-in payloads through the general path; nested reads generate --format nested."
echo
echo "| commit | case | mapped | built-in | ratio |"
echo "|---|---|---|---|---|"
for rev in "${revs[@]}"; do
  while read -r name rate base; do
    [[ "$name" == *_mapped_* ]] || continue
    awk -v c="$rev" -v n="$name" -v r="$rate" -v b="$base" 'BEGIN {
      sub(/_mapped_/, " ", n); sub(/_tags/, " tags", n); printf "| %s | %s | %.0fk/s | %.0fk/s | %.2fx |\n", c, n, r / 1e3, b / 1e3, (b > 0 ? r / b : 0) }'
  done <<<"${hot[$rev]}"
done

if [ "$hot_only" = 1 ]; then exit 0; fi
stack_env=$(scripts/stack.sh env) || { echo "bench.sh: the end-to-end runs need the stack: scripts/stack.sh up" >&2; exit 1; }
eval "$stack_env"
echo >&2
echo "end to end (examples/e2e_bench.rs, 40,000 commands), $e2e_runs runs per commit, interleaved …" >&2
declare -A runs
for _ in $(seq "$e2e_runs"); do
  for rev in "${revs[@]}"; do runs[$rev]+="$(e2e "$rev")"$'\n'; done
done
echo
echo "End to end, 40,000 commands over 20,000 ids, against the ES stand-in's raw bulk capacity:"
echo
echo "| commit | run | ratio to raw (whole run) | steady ratio | CPU per command | peak RSS |"
echo "|---|---|---|---|---|---|"
for rev in "${revs[@]}"; do
  n=0
  while read -r ratio steady cpu rss; do
    [ -n "$ratio" ] || continue
    n=$((n + 1))
    echo "| $rev | $n | ${ratio}x | ${steady}x | ${cpu} µs | ${rss} MB |"
  done <<<"${runs[$rev]}"
  echo "${runs[$rev]}" | awk -v c="$rev" 'NF { r += $1; s += $2; u += $3; n++ }
    END { if (n) printf "| %s | mean | %.2fx | %.2fx | %.1f µs | |\n", c, r / n, s / n, u / n }'
done
