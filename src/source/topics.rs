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

/// One metadata request for `topic` (blocking): its partition count, `None` if the brokers know
/// no partition of it, or why the brokers did not answer within `timeout`, naming them.
pub fn probe_partitions(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let brokers = config.get("bootstrap.servers").unwrap_or("?");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| {
        format!(
            "no metadata from {brokers} within {}s: {e}",
            timeout.as_secs()
        )
    })?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    Ok((partitions > 0).then_some(partitions as i32))
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
}

/// Reads every message of `topic` up to the high watermarks at the time of the call, sorted by
/// partition and offset. For tests, benchmarks and tooling; it joins no group.
pub fn read_all(
    config: &ClientConfig,
    topic: &str,
    timeout: Duration,
) -> anyhow::Result<Vec<Record>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "dual-indexer-reader")
        .set("enable.auto.commit", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut ends = std::collections::HashMap::new();
    let mut list = TopicPartitionList::new();
    for p in metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions())
    {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        if high > low {
            ends.insert(p.id(), high);
            list.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    let mut records = Vec::new();
    if ends.is_empty() {
        return Ok(records);
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
        });
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}
