//! Creating topics when they are missing (the generator's topic, the dead-letter topic).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

/// Creates `topic` with `partitions` partitions unless it exists. Returns whether it created it.
pub async fn ensure_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<bool> {
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    create_topic(&admin, topic, partitions).await
}

/// [`ensure_topic`] through a client the caller already has.
pub async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<bool> {
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(-1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin.create_topics([&new], &options).await?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(true),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(false),
        Some(Err((name, code))) => anyhow::bail!("creating topic `{name}` failed: {code}"),
        None => anyhow::bail!("creating topic `{topic}`: the broker gave no answer"),
    }
}

/// The partition ids of `topic` in the broker's metadata; none if the topic does not exist.
pub fn partition_ids<C, K>(
    client: &K,
    topic: &str,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<Vec<i32>>
where
    C: rdkafka::consumer::ConsumerContext,
    K: rdkafka::consumer::Consumer<C>,
{
    let metadata = client.fetch_metadata(Some(topic), timeout)?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// One message read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers, values as (lossy) UTF-8.
    pub headers: std::collections::HashMap<String, String>,
    /// The record timestamp (epoch milliseconds), if the broker gave one.
    pub timestamp: Option<i64>,
}

/// Reads every message of `topic` up to the high watermarks at the time of the call, sorted by
/// partition and offset. For tests, benchmarks and tooling; it joins no group.
pub fn read_all(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Record>> {
    Ok(read_tail(config, "dual-indexer-reader", false, topic, timeout)?.0)
}

/// Reads `topic` up to the high watermarks at the time of the call, from the offsets `group` has
/// committed (from the start of each partition where it has none) when `from_committed`, else
/// from the start. Returns the records, sorted by partition and offset, and each partition's end,
/// for a later [`commit_ends`]. Assigns partitions itself: no rebalance, no other member needed.
pub fn read_tail(
    config: &ClientConfig,
    group: &str,
    from_committed: bool,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<(Vec<Record>, Vec<PartitionEnd>)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let partitions = partition_ids(&consumer, topic, Duration::from_secs(10))?;
    let mut committed = std::collections::HashMap::new();
    if from_committed && !partitions.is_empty() {
        let mut all = TopicPartitionList::new();
        for p in &partitions {
            all.add_partition(topic, *p);
        }
        for e in consumer
            .committed_offsets(all, Duration::from_secs(10))?
            .elements()
        {
            if let Offset::Offset(o) = e.offset() {
                committed.insert(e.partition(), o);
            }
        }
    }
    let mut ends = std::collections::HashMap::new();
    let mut all_ends = Vec::new();
    let mut list = TopicPartitionList::new();
    for p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        all_ends.push((p, high));
        let start = committed.get(&p).copied().unwrap_or(low).max(low);
        if high > start {
            ends.insert(p, high);
            list.add_partition_offset(topic, p, Offset::Offset(start))?;
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return Ok((records, all_ends));
    }
    consumer.assign(&list)?;
    let deadline = std::time::Instant::now() + timeout;
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "reading `{topic}` timed out after {} records",
            records.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = message?;
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp: m.timestamp().to_millis(),
        });
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok((records, all_ends))
}

/// A partition and its end (the offset after its last message) when it was read.
pub type PartitionEnd = (i32, i64);

/// Commits `ends` of `topic` for `group`, as [`read_tail`] returned them.
pub fn commit_ends(
    config: &ClientConfig,
    group: &str,
    topic: &str,
    ends: &[PartitionEnd],
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut list = TopicPartitionList::new();
    for (p, end) in ends {
        list.add_partition_offset(topic, *p, Offset::Offset(*end))?;
    }
    consumer.commit(&list, CommitMode::Sync)?;
    Ok(())
}
