//! The command topic as the replay loop sees it: messages in, final offsets out.
//!
//! [`CommandSource`] owns the consumer, the offset tracker, the rebalance handling (through
//! [`IndexerContext`]), pausing and commits, so the loop never touches Kafka itself:
//! - [`Reader::recv`] hands out each new message with its tracker ticket (a redelivery below
//!   what the tracker already holds is skipped);
//! - [`CommandSource::finish`] marks a message final;
//! - [`CommandSource::commit`] commits the final prefix of every partition on a blocking thread,
//!   and [`CommandSource::commit_finished`] records Kafka's answer: an offset counts as
//!   committed only once Kafka confirmed it, and a failed one is offered again next time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::kafka::{self, lock, IndexerContext};
use super::offsets::{OffsetTracker, Ticket};
use super::{group, topics};
use crate::envelope::{HeaderLookup, Record};
use crate::lag::monitor::{ClientClosed, OffsetsClient};

/// How long leaving the consumer group may take at exit, after the final commit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// The least time between two commits made because the loop went idle (see
/// [`CommandSource::commit_if_idle`]); the regular commits keep `--commit-interval-ms`.
const IDLE_COMMIT_GAP: Duration = Duration::from_millis(200);

/// A partition, an offset and the error if committing it failed.
type CommitResult = (i32, i64, Option<String>);

/// The consumer of the command topic and what it has made final.
pub struct CommandSource {
    topic: String,
    consumer: Arc<StreamConsumer<IndexerContext>>,
    tracker: Arc<Mutex<OffsetTracker>>,
    rebalanced: Arc<AtomicBool>,
    partitions_recorded: Option<i32>,
    commit_interval: Duration,
    max_poll_interval_ms: Option<u64>,
    last_commit: Option<Instant>,
    /// The loop went idle and its commit is still to be made.
    idle_commit_owed: bool,
    /// The commit in flight, if any.
    commit_task: Option<PendingCommit>,
    /// Set when the close begins: the lag monitor's handle stops lending the consumer.
    closing: Arc<AtomicBool>,
}

/// A commit handed to a blocking thread and the offsets it offers Kafka.
struct PendingCommit {
    task: JoinHandle<Vec<CommitResult>>,
    offered: Vec<(i32, i64)>,
}

/// The receiving end of a [`CommandSource`], borrowed by the loop's `select!` while the source
/// itself stays free for commits.
pub struct Reader {
    consumer: Arc<StreamConsumer<IndexerContext>>,
    tracker: Arc<Mutex<OffsetTracker>>,
    topic: String,
    partitions_recorded: Option<i32>,
}

/// One new message and its ticket.
pub struct Incoming<'a> {
    message: BorrowedMessage<'a>,
    /// The tracker's ticket, to hand back to [`CommandSource::finish`].
    pub ticket: Ticket,
}

impl Incoming<'_> {
    /// The message key.
    pub fn key(&self) -> Option<&[u8]> {
        self.message.key()
    }

    /// The message value; `None` for a tombstone.
    pub fn payload(&self) -> Option<&[u8]> {
        self.message.payload()
    }

    /// The message as the envelope plan reads it.
    pub fn record(&self) -> Record<'_> {
        Record {
            payload: self.message.payload(),
            key: self.message.key(),
            offset: self.ticket.offset,
            timestamp: self.message.timestamp().to_millis(),
            headers: self.message.headers().map(|h| h as &dyn HeaderLookup),
        }
    }
}

impl HeaderLookup for BorrowedHeaders {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .filter(|h| h.key == name)
            .last()
            .and_then(|h| h.value)
    }
}

/// Why [`Reader::recv`] gave no message.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    /// The consumer reported an error; it keeps consuming.
    #[error("Kafka consumer error: {0}")]
    Kafka(String),
    /// A message came from a partition the index's offset versions do not cover: the index was
    /// built from `recorded` partitions and the topic has at least `now`.
    #[error(
        "topic `{topic}` has at least {now} partitions, but the index was built from {recorded}"
    )]
    PartitionsAdded {
        /// The topic.
        topic: String,
        /// The partition count recorded in the index.
        recorded: i32,
        /// The partition count the message shows, at least.
        now: i32,
    },
}

impl Reader {
    /// The next new message; `Ok(None)` for a redelivery the tracker already holds.
    pub async fn recv(&self) -> Result<Option<Incoming<'_>>, RecvError> {
        let message = self
            .consumer
            .recv()
            .await
            .map_err(|e| RecvError::Kafka(e.to_string()))?;
        let partition = message.partition();
        if let Some(count) = self.partitions_recorded.filter(|c| partition >= *c) {
            return Err(RecvError::PartitionsAdded {
                topic: self.topic.clone(),
                recorded: count,
                now: partition + 1,
            });
        }
        let ticket = lock(&self.tracker).track(partition, message.offset());
        Ok(ticket.map(|ticket| Incoming { message, ticket }))
    }
}

/// The replay's consumer, lent to the lag monitor so that `run` keeps no second client for its
/// own group (and, before it subscribes, to the start's wait for the topic). The handle is weak:
/// the monitor holds the consumer only while one call runs, so it never keeps the group
/// membership alive past [`CommandSource::close`]. Once the close begins, no call starts
/// ([`ClientClosed`]), and one in flight gives up after [`LENT_CALL_TIMEOUT`]: the close waits
/// for it, and a sample must not use up the close's own time limit.
#[derive(Clone)]
pub struct MonitorHandle {
    consumer: Weak<StreamConsumer<IndexerContext>>,
    closing: Arc<AtomicBool>,
}

/// How long a call through a [`MonitorHandle`] may wait for the broker.
const LENT_CALL_TIMEOUT: Duration = Duration::from_secs(3);

impl MonitorHandle {
    fn consumer(&self) -> anyhow::Result<Arc<StreamConsumer<IndexerContext>>> {
        if self.closing.load(Ordering::Acquire) {
            return Err(ClientClosed.into());
        }
        Ok(self.consumer.upgrade().ok_or(ClientClosed)?)
    }

    /// The partition ids of `topic`, waiting at most `timeout` for the brokers: the start's wait
    /// for the topic allows a broker more time than a lag sample does. A new consumer's first
    /// request waits for its connection and its group coordinator lookup, and under load the
    /// test broker took more than 3 s to answer it.
    pub fn partitions_within(&self, topic: &str, timeout: Duration) -> anyhow::Result<Vec<i32>> {
        Ok(topics::partition_ids(&*self.consumer()?, topic, timeout)?)
    }
}

impl OffsetsClient for MonitorHandle {
    fn partitions(&self, topic: &str) -> anyhow::Result<Vec<i32>> {
        self.partitions_within(topic, LENT_CALL_TIMEOUT)
    }

    fn committed(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        group::committed(&*self.consumer()?, topic, partitions, LENT_CALL_TIMEOUT)
    }

    fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        Ok(self
            .consumer()?
            .fetch_watermarks(topic, partition, LENT_CALL_TIMEOUT)?)
    }
}

impl CommandSource {
    /// The consumer of `topic` for `group`, not yet a member of it: the start reads the topic's
    /// metadata through it ([`Self::monitor_handle`]) before [`Self::subscribe`] joins the group,
    /// so no client is made only to ask whether the brokers answer. Settings librdkafka refuses
    /// (an unknown property, a bad value, two that contradict each other, a certificate file it
    /// cannot load) end the start here: no broker was asked, and asking again cannot help.
    pub fn connect(
        kafka_config: &ClientConfig,
        group: &str,
        topic: &str,
        commit_interval: Duration,
    ) -> anyhow::Result<Self> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let context = IndexerContext::new(topic, Arc::clone(&tracker));
        let rebalanced = context.rebalanced_flag();
        let config = kafka::consumer_config(kafka_config, group);
        let max_poll_interval_ms = config
            .get("max.poll.interval.ms")
            .and_then(|ms| ms.parse().ok());
        let consumer: StreamConsumer<IndexerContext> =
            config.create_with_context(context).map_err(|e| {
                anyhow::anyhow!(crate::secrets::scrub(&format!(
                    "librdkafka refused the Kafka client settings (--kafka, the [kafka] table of \
                 --config, or a DUAL_INDEXER_KAFKA_* secret): {e}"
                )))
            })?;
        Ok(Self {
            topic: topic.to_owned(),
            consumer: Arc::new(consumer),
            tracker,
            rebalanced,
            partitions_recorded: None,
            commit_interval,
            max_poll_interval_ms,
            last_commit: None,
            idle_commit_owed: false,
            commit_task: None,
            closing: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Subscribes the group to the topic. With offset versions, `partitions_recorded` is the
    /// partition count the index was built from; a message from past it stops the run.
    pub fn subscribe(&mut self, partitions_recorded: Option<i32>) -> anyhow::Result<()> {
        self.partitions_recorded = partitions_recorded;
        self.consumer
            .subscribe(&[self.topic.as_str()])
            .map_err(|e| anyhow::anyhow!("subscribing to `{}`: {e}", self.topic))
    }

    /// The consumer as the lag monitor reads our group's offsets through it (see
    /// [`MonitorHandle`]).
    pub fn monitor_handle(&self) -> MonitorHandle {
        MonitorHandle {
            consumer: Arc::downgrade(&self.consumer),
            closing: Arc::clone(&self.closing),
        }
    }

    /// The receiving end, for the loop.
    pub fn reader(&self) -> Reader {
        Reader {
            consumer: Arc::clone(&self.consumer),
            tracker: Arc::clone(&self.tracker),
            topic: self.topic.clone(),
            partitions_recorded: self.partitions_recorded,
        }
    }

    /// The consumer's `max.poll.interval.ms`, which bounds how long the loop may stop polling.
    pub fn max_poll_interval_ms(&self) -> Option<u64> {
        self.max_poll_interval_ms
    }

    /// Marks a message final; false if its partition was revoked since it was received.
    pub fn finish(&self, ticket: Ticket) -> bool {
        lock(&self.tracker).finish(ticket)
    }

    /// Messages received and not final.
    pub fn pending(&self) -> usize {
        lock(&self.tracker).pending()
    }

    /// Whether any partition is assigned to this member now.
    pub fn has_assignment(&self) -> bool {
        lock(&self.tracker).assigned().next().is_some()
    }

    /// Whether `ticket`'s partition is still assigned in the epoch it was received in.
    pub fn is_current(&self, ticket: Ticket) -> bool {
        lock(&self.tracker).is_current(ticket)
    }

    /// A check the sink and the dead-letter writes can keep: is this ticket still wanted.
    pub fn wanted(&self) -> Arc<dyn Fn(Ticket) -> bool + Send + Sync> {
        let tracker = Arc::clone(&self.tracker);
        Arc::new(move |ticket| lock(&tracker).is_current(ticket))
    }

    /// Whether the assignment changed since the last call.
    pub fn take_rebalanced(&self) -> bool {
        self.rebalanced.swap(false, Ordering::SeqCst)
    }

    /// Pauses or resumes the whole assignment. On failure the rebalance is remembered, so the
    /// wanted state is applied again on a later call.
    pub fn set_paused(&self, pause: bool, rebalanced: bool) -> Result<(), String> {
        let result = self.consumer.assignment().and_then(|assignment| {
            if pause {
                self.consumer.pause(&assignment)
            } else {
                self.consumer.resume(&assignment)
            }
        });
        result.map_err(|e| {
            self.rebalanced.fetch_or(rebalanced, Ordering::SeqCst);
            e.to_string()
        })
    }

    /// Commits at once when every message received is final, so that the group's lag reads zero
    /// as soon as the work is done rather than at the next tick. At most once per
    /// [`IDLE_COMMIT_GAP`], so a slow live stream that idles after every bulk does not commit
    /// after each one.
    ///
    /// An idle commit that cannot be made yet (one is in flight, or the last was under the gap
    /// ago) is owed: it is made when the commit in flight is answered, or at
    /// [`Self::idle_commit_at`]. Dropping it instead would leave the group's lag above zero until
    /// the next tick, however long `--commit-interval-ms` is.
    pub fn commit_if_idle(&mut self) {
        self.idle_commit_owed = self.pending() == 0;
        if !self.idle_commit_owed || self.commit_task.is_some() {
            return;
        }
        let gap = IDLE_COMMIT_GAP.min(self.commit_interval);
        if self.last_commit.is_none_or(|at| at.elapsed() >= gap) {
            self.idle_commit_owed = false;
            self.commit();
        }
    }

    /// When an owed idle commit waits only for [`IDLE_COMMIT_GAP`] to pass.
    pub fn idle_commit_at(&self) -> Option<Instant> {
        let gap = IDLE_COMMIT_GAP.min(self.commit_interval);
        (self.idle_commit_owed && self.commit_task.is_none())
            .then(|| self.last_commit.map_or_else(Instant::now, |at| at + gap))
    }

    /// Whether an idle commit is owed (see [`Self::commit_if_idle`]).
    pub fn idle_commit_owed(&self) -> bool {
        self.idle_commit_owed
    }

    /// Hands the final offsets to Kafka on a blocking thread, so the loop never waits on the
    /// group coordinator. One commit is in flight at a time.
    pub fn commit(&mut self) {
        if self.commit_task.is_some() {
            return;
        }
        let commits = lock(&self.tracker).take_commits();
        if commits.is_empty() {
            return;
        }
        self.last_commit = Some(Instant::now());
        let (consumer, topic) = (Arc::clone(&self.consumer), self.topic.clone());
        let offered = commits.clone();
        let task = tokio::task::spawn_blocking(move || commit_now(&consumer, &topic, &commits));
        self.commit_task = Some(PendingCommit { task, offered });
    }

    /// Waits for the commit in flight, if any (forever otherwise), and records Kafka's answer.
    pub async fn commit_finished(&mut self) {
        let Some(pending) = self.commit_task.as_mut() else {
            return std::future::pending().await;
        };
        let answer = (&mut pending.task).await;
        let PendingCommit { offered, .. } =
            self.commit_task.take().expect("the commit awaited above");
        self.record(answered(answer, offered));
    }

    /// Commits every partition's final offsets, waiting for the answer, and leaves the group.
    /// Returns how many messages were received but are not final.
    pub async fn close(mut self) -> usize {
        // The lag monitor starts no call from here on (see [`MonitorHandle`]).
        self.closing.store(true, Ordering::Release);
        if let Some(PendingCommit { task, offered }) = self.commit_task.take() {
            let answer = task.await;
            self.record(answered(answer, offered));
        }
        let points = lock(&self.tracker).commit_points();
        if !points.is_empty() {
            let results = commit_now(&self.consumer, &self.topic, &points);
            self.record(results);
        }
        let unfinished = self.pending();
        kafka::close(self.consumer, CLOSE_TIMEOUT).await;
        unfinished
    }

    /// Records what Kafka answered to a commit.
    fn record(&mut self, results: Vec<CommitResult>) {
        let mut failed = Vec::new();
        for (partition, offset, error) in results {
            lock(&self.tracker).commit_result(partition, offset, error.is_none());
            match error {
                None => metrics::gauge!("offsets.committed", "topic" => self.topic.clone(), "partition" => partition.to_string())
                    .set(offset as f64),
                Some(error) => failed.push((partition, offset, error)),
            }
        }
        if let Some((_, _, error)) = failed.first() {
            metrics::counter!("offsets.commit_failures").increment(1);
            let partitions: Vec<(i32, i64)> = failed.iter().map(|(p, o, _)| (*p, *o)).collect();
            tracing::warn!(%error, ?partitions, "offset commit failed; the same offsets are committed again at the next commit");
        }
    }
}

/// The results of a commit thread, or every offset failed if the thread itself failed.
fn answered(
    answer: Result<Vec<CommitResult>, tokio::task::JoinError>,
    offered: Vec<(i32, i64)>,
) -> Vec<CommitResult> {
    answer.unwrap_or_else(|e| {
        let reason = format!("the commit thread failed: {e}");
        offered
            .into_iter()
            .map(|(p, o)| (p, o, Some(reason.clone())))
            .collect()
    })
}

/// Commits `commits` and waits for Kafka's answer: each partition and offset, with the error if
/// it failed (a commit can fail for some partitions only).
fn commit_now(
    consumer: &StreamConsumer<IndexerContext>,
    topic: &str,
    commits: &[(i32, i64)],
) -> Vec<CommitResult> {
    let mut list = TopicPartitionList::new();
    for (partition, offset) in commits {
        // Adding an offset to a fresh list fails only for an invalid offset, which the tracker
        // never produces; such a partition is simply not committed this time.
        let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    let result = consumer.commit(&list, CommitMode::Sync);
    commits
        .iter()
        .map(|(partition, offset)| {
            let element = list.find_partition(topic, *partition);
            let error = match (&result, element.map(|e| e.error())) {
                (Err(e), _) => Some(e.to_string()),
                (Ok(()), Some(Err(e))) => Some(e.to_string()),
                (Ok(()), _) => None,
            };
            (*partition, *offset, error)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings librdkafka refuses end the start before any broker is asked (nothing listens on
    /// port 1, so a wait for it would never end), with librdkafka's reason, which names the
    /// setting.
    #[test]
    fn kafka_settings_librdkafka_refuses_end_the_start_at_once() {
        for (key, value, reason) in [
            ("no.such.property", "1", "No such configuration property"),
            ("fetch.max.bytes", "1024", "`fetch.max.bytes` must be >="),
            ("enable.auto.commit", "maybe", "enable.auto.commit"),
        ] {
            let mut config = ClientConfig::new();
            config
                .set("bootstrap.servers", "127.0.0.1:1")
                .set(key, value);
            let error = CommandSource::connect(&config, "g", "commands", Duration::from_secs(1))
                .err()
                .unwrap_or_else(|| panic!("{key}={value}: accepted"))
                .to_string();
            assert!(
                error.contains("librdkafka refused the Kafka client settings")
                    && error.contains(reason),
                "{key}={value}: {error}"
            );
        }
    }
}
