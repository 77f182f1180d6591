#!/usr/bin/env bash
# Every figure the README and docs/benchmarks.md publish, from one command:
#
#   scripts/bench.sh                      every figure, on a freshly started stack, for the
#                                         checked-out commit, written to docs/bench-results.md
#   scripts/bench.sh --hot-path-only      only the hot path (no stack needed), printed
#   scripts/bench.sh --against REV        hot path and end-to-end ratio for REV too, interleaved
#                                         on the same machine, printed (a comparison, not results)
#   scripts/bench.sh --e2e-runs N         runs per end-to-end size and commit, and of the ceiling
#                                         and the backfill (default 3)
#   scripts/bench.sh --out FILE           write the results elsewhere
#
# The full run restarts the local stack (scripts/stack.sh down, up) so that every figure comes
# from the same fresh stand-ins, and measures: the hot path (benches/pipeline.rs); end to end
# at 20k and 40k commands against the stand-in's raw bulk capacity; memory through a 20k and a
# 200k backlog; the indexer's ceiling into the bench sink against a bare consumer; backfill
# with 1 and 4 slices; and the soak in a short mode. Every end-to-end run checks its end state
# (the documents equal to the tests' oracle, or every command answered once by the bench sink)
# and fails the script otherwise. Absolute rates on a shared 2-core machine are noise: the
# tables give the ratios measured within one run, and the results file names the commit, the
# date and the machine.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

against="" e2e_runs=3 hot_only=0 out="docs/bench-results.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --against) against=${2:?--against needs a revision}; shift 2 ;;
    --e2e-runs) e2e_runs=${2:?--e2e-runs needs a number}; shift 2 ;;
    --hot-path-only) hot_only=1; shift ;;
    --out) out=${2:?--out needs a file}; shift 2 ;;
    *) echo "usage: scripts/bench.sh [--hot-path-only] [--against REV] [--e2e-runs N] [--out FILE]" >&2; exit 2 ;;
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

# One ratio run of the binary named $1 on $2 commands over $3 ids: prints
# "<ratio> <steady ratio> <us/command> <RSS MB>".
e2e() {
  local out
  out=$("$CARGO_TARGET_DIR/release/examples/e2e_bench" --indexer "$cache/dual-indexer-$1" --count "$2" --ids "$3") \
    || { echo "bench.sh: the end-to-end run failed (its end state is checked)" >&2; exit 1; }
  echo "$out" | awk '
    /^ratio/ { r = $2 }
    /^steady rate/ { s2 = $(NF-1); gsub(/[()x]/, "", s2) }
    /^indexer CPU/ { c = $5; gsub(/[(]/, "", c) }
    /^indexer peak RSS/ { m = $4 }
    END { sub(/x$/, "", r); printf "%s %s %s %s\n", r, s2, c, m }'
}

# The value after the label $1 in the example output $2 (its first word).
field() { echo "$2" | awk -v label="$1" 'index($0, label) == 1 { sub(label, ""); print $1; exit }'; }
# The indexer's CPU microseconds per command in the example output $1.
cpu_us() { echo "$1" | awk '/^indexer CPU/ { c = $5; gsub(/[(]/, "", c); print c }'; }

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
# The harnesses of this tree drive every binary, so only the indexer differs.
cargo build --release --locked --example e2e_bench --example backfill_bench --example soak --quiet

hot_path_tables() {
  echo "hot path (cargo bench --bench pipeline), interleaved …" >&2
  declare -A hot
  for i in "${!revs[@]}"; do hot[${revs[$i]}]=$(hot_path "${trees[$i]}"); done
  echo "## Hot path"
  echo
  echo "\`cargo bench --bench pipeline\`: decode → transform → bulk line on one core, against a"
  echo "\`serde_json::Value\` parse and re-serialise of the same payloads in the same run."
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
  echo "The envelope mapping (docs/envelope.md), same run: \`same_payloads\` reads built-in payloads"
  echo "through the general path; \`nested\` reads \`generate --format nested\`."
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
}

# The end-to-end ratio table for every commit at $1 commands over $2 ids.
ratio_table() {
  local count=$1 ids=$2
  echo "end to end, $count commands, $e2e_runs runs per commit, interleaved …" >&2
  declare -A runs
  for _ in $(seq "$e2e_runs"); do
    for rev in "${revs[@]}"; do runs[$rev]+="$(e2e "$rev" "$count" "$ids")"$'\n'; done
  done
  echo
  echo "### $count commands over $ids ids"
  echo
  echo "| commit | run | ratio to raw (whole run) | steady ratio | CPU per command | peak RSS |"
  echo "|---|---|---|---|---|---|"
  for rev in "${revs[@]}"; do
    local n=0
    while read -r ratio steady cpu rss; do
      [ -n "$ratio" ] || continue
      n=$((n + 1))
      echo "| $rev | $n | ${ratio}x | ${steady}x | ${cpu} µs | ${rss} MB |"
    done <<<"${runs[$rev]}"
    echo "${runs[$rev]}" | awk -v c="$rev" 'NF { r += $1; s += $2; u += $3; n++ }
      END { if (n) printf "| %s | mean | %.2fx | %.2fx | %.1f µs | |\n", c, r / n, s / n, u / n }'
  done
}

e2e_tables() {
  echo
  echo "## End to end against the stand-in"
  echo
  echo "\`examples/e2e_bench.rs\`: the release indexer against the stand-in's raw bulk capacity for exactly"
  echo "its writes, measured before and after it in the same run; each run's index is checked"
  echo "against the tests' oracle."
  ratio_table 20000 10000
  ratio_table 40000 20000
}

# Everything but the hot path and the ratio runs: measured for the checked-out commit only.
other_tables() {
  local bin="$cache/dual-indexer-${revs[0]}" out
  echo
  echo "## Memory against the backlog"
  echo
  echo "\`e2e_bench --mode memory\`: the whole backlog replayed into the stand-in, the index checked"
  echo "against the oracle, the indexer's peak RSS (\`VmHWM\`) over the whole run. 10 tags per command."
  echo
  echo "| backlog | peak RSS | CPU per command | rate |"
  echo "|---|---|---|---|"
  for backlog in "20000 10000" "200000 50000"; do
    read -r count ids <<<"$backlog"
    echo "memory through a backlog of $count …" >&2
    out=$("$CARGO_TARGET_DIR/release/examples/e2e_bench" --mode memory --indexer "$bin" --count "$count" --ids "$ids") \
      || { echo "bench.sh: the memory run failed" >&2; exit 1; }
    echo "| $count commands | $(field "indexer peak RSS" "$out") MB | $(cpu_us "$out") µs | $(field "dual-indexer" "$out") commands/s |"
  done

  echo
  echo "## The indexer's ceiling"
  echo
  echo "\`e2e_bench --mode ceiling --count 200000 --ids 50000\`, $e2e_runs runs: the indexer into the bench"
  echo "sink (\`examples/bench_support/sink.rs\`, \`_bulk\` answered at memory speed), against a bare rdkafka"
  echo "consumer of the same topic with the same consumer settings, measured before and after it. The sink"
  echo "answered every command once in every run."
  echo
  echo "| run | bare consumer | dual-indexer into the sink | ratio | CPU per command | peak RSS |"
  echo "|---|---|---|---|---|---|"
  local rows=""
  for n in $(seq "$e2e_runs"); do
    echo "ceiling $n of $e2e_runs: 200,000 commands into the bench sink …" >&2
    out=$("$CARGO_TARGET_DIR/release/examples/e2e_bench" --mode ceiling --indexer "$bin" --count 200000 --ids 50000) \
      || { echo "bench.sh: the ceiling run failed" >&2; exit 1; }
    local row
    row="$(field "bare consumer" "$out") $(field "dual-indexer" "$out") $(field "ratio to bare consumer" "$out" | tr -d x) $(cpu_us "$out") $(field "indexer peak RSS" "$out")"
    rows+="$row"$'\n'
    read -r bare rate ratio cpu rss <<<"$row"
    echo "| $n | $bare msg/s | $rate commands/s | ${ratio}x | $cpu µs | $rss MB |"
  done
  echo "$rows" | awk 'NF { b += $1; r += $2; q += $3; c += $4; n++ }
    END { printf "| mean | %.0f msg/s | %.0f commands/s | %.2fx | %.1f µs | |\n", b / n, r / n, q / n, c / n }'

  echo
  echo "## Backfill"
  echo
  echo "\`examples/backfill_bench.rs --docs 20000\`, $e2e_runs runs: legacy stand-in to new stand-in, against the"
  echo "new stand-in's raw bulk capacity for the same documents in the same run; each copy checked against"
  echo "the oracle."
  echo
  echo "| run | raw bulk capacity | 1 slice | ratio | 4 slices | ratio |"
  echo "|---|---|---|---|---|---|"
  local rows=""
  for n in $(seq "$e2e_runs"); do
    echo "backfill $n of $e2e_runs, 1 and 4 slices …" >&2
    out=$("$CARGO_TARGET_DIR/release/examples/backfill_bench" --indexer "$bin" --docs 20000) \
      || { echo "bench.sh: the backfill run failed" >&2; exit 1; }
    local row
    row=$(echo "$out" | awk '
      /^raw bulk capacity/ { raw = $4 }
      /^backfill, 1 slice/ { one = $4; r1 = $(NF-1) }
      /^backfill, 4 slices/ { four = $4; r4 = $(NF-1) }
      END { gsub(/x/, "", r1); gsub(/x/, "", r4); print raw, one, r1, four, r4 }')
    rows+="$row"$'\n'
    read -r raw one r1 four r4 <<<"$row"
    echo "| $n | $raw docs/s | $one docs/s | ${r1}x | $four docs/s | ${r4}x |"
  done
  echo "$rows" | awk 'NF { w += $1; o += $2; p += $3; f += $4; q += $5; n++ }
    END { printf "| mean | %.0f docs/s | %.0f docs/s | %.2fx | %.0f docs/s | %.2fx |\n", w / n, o / n, p / n, f / n, q / n }'

  echo
  echo "## The shadow proxy's overhead"
  echo
  echo "\`cargo bench --bench shadow\`: the same search sent directly and through an in-process \`shadow\` proxy"
  echo "with \`--sample\` 0, 0.05 and 1, against a fixed-answer server in the bench, then against the legacy stand-in."
  for upstream in "" "$LEGACY_ES_URL"; do
    echo "shadow proxy overhead${upstream:+ against $upstream} …" >&2
    out=$(env ${upstream:+SHADOW_BENCH_UPSTREAM=$upstream} cargo bench --locked --bench shadow 2>/dev/null) \
      || { echo "bench.sh: the shadow bench failed" >&2; exit 1; }
    echo
    echo "$out" | grep -E '^(\||[0-9]+ sequential)'
  done

  echo
  echo "## Soak, short mode"
  echo
  echo "\`examples/soak.rs --small 100000 --wide 20000\`: each phase's whole backlog produced first, then"
  echo "replayed with \`run --until-caught-up\` while the indexer's memory is sampled every 500 ms; each"
  echo "index checked against the oracle."
  echo
  echo "soak, short mode …" >&2
  out=$("$CARGO_TARGET_DIR/release/examples/soak" --indexer "$bin" --small 100000 --wide 20000) \
    || { echo "bench.sh: the soak failed" >&2; exit 1; }
  echo "| phase | commands | tags each | peak RSS | highest RSS, last tenth / first tenth |"
  echo "|---|---|---|---|---|"
  echo "$out" | awk '
    /^soak / { name = $2; sub(/:/, "", name); n = $3; t = $5 }
    /^peak RSS/ { p = $3; ratio = $0; sub(/.*last\/first /, "", ratio); sub(/\).*/, "", ratio)
      printf "| %s | %s | %s | %s MB | %s |\n", name, n, t, p, ratio }'
}

if [ "$hot_only" = 1 ]; then hot_path_tables; exit 0; fi
if [ -n "$against" ]; then
  stack_env=$(scripts/stack.sh env) || { echo "bench.sh: the end-to-end runs need the stack: scripts/stack.sh up" >&2; exit 1; }
  eval "$stack_env"
  hot_path_tables
  e2e_tables
  exit 0
fi

echo "restarting the local stack, so every figure comes from fresh stand-ins …" >&2
scripts/stack.sh down >/dev/null 2>&1 || true
scripts/stack.sh up >/dev/null
stack_env=$(scripts/stack.sh env) || { echo "bench.sh: the stack's addresses could not be read" >&2; exit 1; }
eval "$stack_env"
results=$(mktemp)
{
  echo "# Benchmark results"
  echo
  echo "Written by \`scripts/bench.sh\` (every figure, one run, a freshly started stack). Do not edit:"
  echo "run the script again. Absolute rates are this machine's; the ratios are measured within one run."
  echo
  echo "- commit: \`${revs[0]}\`"
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "- machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) of memory, $(uname -sr)"
  echo "- end-to-end runs per size: $e2e_runs"
  echo
  hot_path_tables
  e2e_tables
  other_tables
} | tee "$results"
chmod 644 "$results"
mv "$results" "$out"
echo >&2
echo "bench.sh: results written to $out" >&2
