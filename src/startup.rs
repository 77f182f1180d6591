//! Waiting, out loud, for what `run` needs before its replay can start: the Kafka brokers and
//! the Elasticsearch cluster.
//!
//! A sidecar often starts before what it talks to (a compose file, a pod whose broker restarts).
//! Rather than exit, or sit silent until a client library's own timeout, `run` tries again every
//! [`RETRY_EVERY`], names the address and the error at the first failure and again every
//! [`REPEAT_EVERY`], and shows the same on `/healthz`, `/readyz` and `/status`. An answer that
//! waiting cannot change (credentials refused, a version outside the supported range) ends the
//! wait with that error; Kafka settings librdkafka refuses end the start before any wait (see
//! [`crate::source::commands::CommandSource::connect`]).

use std::future::Future;
use std::time::{Duration, Instant};

use elasticsearch::Elasticsearch;

use crate::es::cluster::{self, Cluster, ProbeError, Role};
use crate::source::commands::MonitorHandle;
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

/// Waits until the brokers at `brokers` answer a metadata request for `topic` through
/// `client`, and returns its partition count: `None` when the brokers know no partition of it
/// (it may not exist yet).
pub async fn wait_for_topic(
    client: MonitorHandle,
    brokers: &str,
    topic: &str,
    board: &StatusBoard,
) -> anyhow::Result<Option<i32>> {
    let what = format!("the Kafka brokers at {brokers}");
    tracing::info!(topic, "connecting to {what}");
    wait_for(&what, board, || {
        let (client, topic) = (client.clone(), topic.to_owned());
        async move {
            let partitions =
                tokio::task::spawn_blocking(move || client.partitions_within(&topic, RETRY_EVERY))
                    .await
                    .map_err(|e| Failure::Fatal(e.into()))?
                    .map_err(|e| {
                        Failure::Unreachable(crate::secrets::scrub(&format!("no metadata: {e}")))
                    })?;
            Ok((!partitions.is_empty()).then_some(partitions.len() as i32))
        }
    })
    .await
}
