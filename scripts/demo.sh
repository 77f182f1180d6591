#!/usr/bin/env bash
# The main job on a local stack, in one command: bring the stack up (installing what is missing),
# build the indexer, produce a seeded synthetic command stream in a producer's own nested format,
# show what the envelope mapping makes of its first messages (`envelope check`), replay it into
# the new cluster until the lag is zero, and print the summary. The stack stays up for a look
# around; stop it with `scripts/stack.sh down`.
#
# Knobs (environment): COUNT (20000), IDS (5000), SEED (42), PARTITIONS (3), FORMAT (nested, or
# builtin for the built-in envelope).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

scripts/stack.sh up >/dev/null
eval "$(scripts/stack.sh env)"
cargo build --release --locked --bin dual-indexer
BIN=target/release/dual-indexer

RUN_ID=$(date +%Y%m%d%H%M%S)
TOPIC=commands-$RUN_ID
INDEX=tags-v2-$RUN_ID

FORMAT=${FORMAT:-nested}
MAPPING=()
if [ "$FORMAT" = nested ]; then MAPPING=(--config docs/examples/nested-mapping.toml); fi

"$BIN" generate --brokers "$KAFKA_BROKERS" --topic "$TOPIC" --partitions "${PARTITIONS:-3}" \
  --count "${COUNT:-20000}" --ids "${IDS:-5000}" --seed "${SEED:-42}" --format "$FORMAT"
echo
echo "what the envelope mapping makes of the first messages (dual-indexer envelope check):"
# Exit 1 only says that some sampled message would be dead-lettered (the stream plants poison).
"$BIN" envelope check --brokers "$KAFKA_BROKERS" --topic "$TOPIC" "${MAPPING[@]}" --sample 3 || [ $? -eq 1 ]
echo
"$BIN" run --brokers "$KAFKA_BROKERS" --topic "$TOPIC" --group dual-indexer-demo "${MAPPING[@]}" \
  --es-url "$NEW_ES_URL" --index "$INDEX" --create-index --until-caught-up --interval-secs 1 --window-secs 5

echo
echo "new cluster:      $NEW_ES_URL/$INDEX   (try: curl '$NEW_ES_URL/$INDEX/_search?q=tags.value:Zürich&size=1')"
echo "dead letters:     topic $TOPIC.dlq on $KAFKA_BROKERS"
echo "stack logs:       $DUAL_INDEXER_STACK_DIR/*.log"
echo "stop the stack:   scripts/stack.sh down"
