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
