//! Waiting, out loud, for what `run` needs before its replay can start: the Kafka brokers and
//! the Elasticsearch cluster.
//!
//! A sidecar often starts before what it talks to (a compose file, a pod whose broker restarts).
//! Rather than exit, or sit silent until a client library's own timeout, `run` tries again every
//! [`RETRY_EVERY`], names the address and the error at the first failure and again every
//! [`REPEAT_EVERY`], and shows the same on `/healthz`, `/readyz` and `/status`. An answer that
//! waiting cannot change (credentials refused, Kafka settings librdkafka refuses) ends the wait with
//! that error.

use std::future::Future;
use std::time::{Duration, Instant};

use elasticsearch::Elasticsearch;

use crate::es::cluster::{self, Cluster, ProbeError, Role};
use crate::source::topics::ProbeFailure;
use crate::status::StatusBoard;

/// Time between two attempts.
pub const RETRY_EVERY: Duration = Duration::from_secs(5);

/// Time between two log lines about the same wait.
pub const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// Why an attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Not reachable (yet): try again.
    Unreachable(String),
    /// An answer that waiting will not change.
    Fatal(anyhow::Error),
}

/// Calls `attempt` until it succeeds or fails for good, saying what it waits for meanwhile.
/// `what` names the dependency and its address, e.g. "the Kafka brokers at host:9092".
pub async fn wait_for<T, F, Fut>(
    what: &str,
    board: &StatusBoard,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    let mut last_said: Option<Instant> = None;
    loop {
        match attempt().await {
            Ok(value) => {
                if last_said.is_some() {
                    tracing::info!(
                        waited_secs = started.elapsed().as_secs(),
                        "{what} answered; starting"
                    );
                    board.waiting_for(None);
                }
                return Ok(value);
            }
            Err(Failure::Fatal(e)) => {
                board.waiting_for(None);
                return Err(e);
            }
            Err(Failure::Unreachable(error)) => {
                board.waiting_for(Some(format!("{what}: {error}")));
                if last_said.is_none_or(|t| t.elapsed() >= REPEAT_EVERY) {
                    let waited_secs = started.elapsed().as_secs();
                    tracing::warn!(waited_secs, retry_every_secs = RETRY_EVERY.as_secs(), error = %error, "waiting for {what}");
                    last_said = Some(Instant::now());
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
        }
    }
}

/// Waits until the cluster at `shown_url` (its address without credentials) answers `GET /`,
/// and returns what answered. A refusal of the credentials, or a version outside the range of
/// `role`, ends the wait: waiting will not change them.
pub async fn wait_for_cluster(
    client: &Elasticsearch,
    shown_url: &str,
    role: Role,
    board: &StatusBoard,
) -> anyhow::Result<Cluster> {
    let what = format!("Elasticsearch at {shown_url}");
    let cluster = wait_for(&what, board, || async {
        cluster::probe(client, shown_url, role)
            .await
            .map_err(|e| match e {
                ProbeError::Unreachable(why) => Failure::Unreachable(why),
                ProbeError::Refused(why) => Failure::Fatal(anyhow::anyhow!(why)),
            })
    })
    .await?;
    cluster::log(shown_url, role, &cluster);
    Ok(cluster)
}

/// Waits until the brokers answer a metadata request for `topic`, and returns its partition
/// count: `None` when the brokers know no partition of it (it may not exist yet).
pub async fn wait_for_topic(
    config: &rdkafka::ClientConfig,
    topic: &str,
    board: &StatusBoard,
) -> anyhow::Result<Option<i32>> {
    let brokers = config.get("bootstrap.servers").unwrap_or("?").to_owned();
    let what = format!("the Kafka brokers at {brokers}");
    tracing::info!(topic, "connecting to {what}");
    wait_for(&what, board, || {
        let (config, topic) = (config.clone(), topic.to_owned());
        async move {
            tokio::task::spawn_blocking(move || {
                crate::source::topics::probe_partitions(&config, &topic, RETRY_EVERY)
            })
            .await
            .map_err(|e| Failure::Fatal(e.into()))?
            .map_err(|e| match e {
                ProbeFailure::Settings(why) => {
                    Failure::Fatal(anyhow::anyhow!(crate::secrets::scrub(&why)))
                }
                ProbeFailure::Unanswered(why) => Failure::Unreachable(crate::secrets::scrub(&why)),
            })
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings librdkafka refuses are refused before any broker is asked, so no wait can help:
    /// the wait ends at once with librdkafka's reason, which names the setting.
    #[tokio::test(flavor = "multi_thread")]
    async fn kafka_settings_librdkafka_refuses_end_the_wait_at_once() {
        let board = StatusBoard::default();
        for (key, value, reason) in [
            ("no.such.property", "1", "No such configuration property"),
            ("fetch.max.bytes", "1024", "`fetch.max.bytes` must be >="),
            ("enable.auto.commit", "maybe", "enable.auto.commit"),
        ] {
            let mut config = rdkafka::ClientConfig::new();
            // Nothing listens on port 1: a wait for it would never end.
            config
                .set("bootstrap.servers", "127.0.0.1:1")
                .set(key, value);
            let waited =
                tokio::time::timeout(RETRY_EVERY * 2, wait_for_topic(&config, "commands", &board))
                    .await
                    .unwrap_or_else(|_| panic!("{key}={value}: still waiting for the brokers"));
            let error = waited.expect_err(key).to_string();
            assert!(
                error.contains("librdkafka refused the Kafka client settings")
                    && error.contains(reason),
                "{key}={value}: {error}"
            );
        }
    }
}
