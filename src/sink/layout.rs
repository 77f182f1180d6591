//! The topic layout an index was built from, recorded in the index's `_meta`.
//!
//! With `--version-source offset`, a document's commands are ordered by their offsets, which
//! holds only while every command of a document lands in the same partition. Adding partitions
//! to the topic moves keys: a document's next command lands in another partition, whose offsets
//! may be far lower, and Elasticsearch refuses it as older than what it holds ("already
//! applied"), silently. So `run` records the topic's partition count in the target index's
//! `_meta` (`dual_indexer.partitions.<topic>`) the first time, compares it at every start, and
//! stops at the first message from a partition past it.

use elasticsearch::Elasticsearch;
use serde_json::{json, Value};

use crate::es;

/// The error a changed partition count is refused with, naming the ways out.
pub fn partition_change_error(topic: &str, recorded: i32, now: i32) -> String {
    format!(
        "topic `{topic}` has {now} partitions, but the index was built from {recorded}. With --version-source offset a partition change reorders documents' commands (keys move to partitions whose offsets start lower), and their newer commands would be refused as already applied. Either build a new generation of the index from offset zero (a new index, a new --group, --reset-to-earliest), or switch to a per-document version carried in the commands (--version-source version or timestamp); see docs/runbook.md, \"Partitions added to the topic\""
    )
}

/// Reads the partition count recorded for `topic` in the `_meta` of `index` (an index or an
/// alias with one index), recording `partitions` if there is none yet. Returns the count the
/// index was built from, or an error naming the fix if it differs from `partitions`.
pub async fn check_partitions(
    client: &Elasticsearch,
    index: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<i32> {
    let meta = es::read_meta(client, index).await?;
    if let Some(recorded) = recorded(&meta, topic) {
        if recorded != partitions {
            anyhow::bail!("{}", partition_change_error(topic, recorded, partitions));
        }
        return Ok(recorded);
    }
    es::update_meta(
        client,
        index,
        &format!("recording the partition count of `{topic}`"),
        |meta| meta["dual_indexer"]["partitions"][topic] = json!(partitions),
    )
    .await?;
    tracing::info!(%index, %topic, partitions, "recorded the topic's partition count in the index's _meta");
    Ok(partitions)
}

fn recorded(meta: &Value, topic: &str) -> Option<i32> {
    meta["dual_indexer"]["partitions"][topic]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_is_read_per_topic() {
        let meta = json!({"owner": "search", "dual_indexer": {"partitions": {"commands": 3}}});
        assert_eq!(recorded(&meta, "commands"), Some(3));
        assert_eq!(recorded(&meta, "other"), None);
        assert_eq!(recorded(&json!({}), "commands"), None);
    }

    #[test]
    fn the_refusal_names_both_counts_and_both_ways_out() {
        let e = partition_change_error("commands", 3, 6);
        assert!(
            e.contains("has 6 partitions, but the index was built from 3"),
            "{e}"
        );
        assert!(
            e.contains("new generation") && e.contains("--version-source version"),
            "{e}"
        );
    }
}
