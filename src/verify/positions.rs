//! Where the command topic and both indexers' groups stand, read for settling: the topic's high
//! watermarks and each group's committed offsets.
//!
//! Only OffsetFetch and watermark requests are made, which every Kafka-protocol broker answers
//! (group membership is not needed). librdkafka's calls block, so each read runs on the blocking
//! pool.

use std::sync::Arc;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

use super::settle::Offsets;
use crate::source::group;

const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The topic and the two groups whose commits tell when a difference can be judged.
#[derive(Debug, Clone)]
pub struct Groups {
    /// The command topic.
    pub topic: String,
    /// The dual-indexer's group.
    pub group: String,
    /// The legacy indexer's group.
    pub legacy_group: String,
}

/// Clients reading [`Groups`]' positions; cheap to clone.
#[derive(Clone)]
pub struct Positions {
    inner: Arc<Clients>,
}

struct Clients {
    groups: Groups,
    ours: BaseConsumer,
    legacy: BaseConsumer,
}

/// Both groups' committed offsets, read together.
#[derive(Debug, Clone, Default)]
pub struct Committed {
    /// The legacy group's.
    pub legacy: Offsets,
    /// The dual-indexer's group's.
    pub new: Offsets,
}

impl Positions {
    /// Connects one offsets client per group; none of them joins its group.
    pub fn connect(config: &ClientConfig, groups: Groups) -> anyhow::Result<Self> {
        let client = |g: &str| {
            group::offsets_client(config, g)
                .map_err(|e| anyhow::anyhow!("a Kafka client for group `{g}`: {e}"))
        };
        Ok(Self {
            inner: Arc::new(Clients {
                ours: client(&groups.group)?,
                legacy: client(&groups.legacy_group)?,
                groups,
            }),
        })
    }

    /// The topic and groups read.
    pub fn groups(&self) -> &Groups {
        &self.inner.groups
    }

    /// The topic's high watermark in every partition.
    pub async fn high_watermarks(&self) -> anyhow::Result<Offsets> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let topic = &inner.groups.topic;
            partitions(&inner.ours, topic)?
                .into_iter()
                .map(|p| {
                    let (_, high) =
                        inner
                            .ours
                            .fetch_watermarks(topic, p, TIMEOUT)
                            .map_err(|e| {
                                anyhow::anyhow!(
                                    "the high watermark of `{topic}` partition {p}: {e}"
                                )
                            })?;
                    Ok((p, high))
                })
                .collect()
        })
        .await?
    }

    /// What each group has committed on every partition (a partition without a commit is left
    /// out).
    pub async fn committed(&self) -> anyhow::Result<Committed> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let topic = &inner.groups.topic;
            let partitions = partitions(&inner.ours, topic)?;
            let read = |client: &BaseConsumer, name: &str| -> anyhow::Result<Offsets> {
                let offsets =
                    group::committed(client, topic, &partitions, TIMEOUT).map_err(|e| {
                        anyhow::anyhow!("the committed offsets of group `{name}` on `{topic}`: {e}")
                    })?;
                Ok(offsets
                    .into_iter()
                    .filter_map(|(p, o)| o.map(|o| (p, o)))
                    .collect())
            };
            Ok(Committed {
                legacy: read(&inner.legacy, &inner.groups.legacy_group)?,
                new: read(&inner.ours, &inner.groups.group)?,
            })
        })
        .await?
    }
}

fn partitions(client: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let partitions = crate::source::topics::partition_ids(client, topic, TIMEOUT)
        .map_err(|e| anyhow::anyhow!("the partitions of `{topic}`: {e}"))?;
    anyhow::ensure!(
        !partitions.is_empty(),
        "topic `{topic}` does not exist or has no partitions (check --topic and --brokers)"
    );
    Ok(partitions)
}
