//! The command-topic consumer and its rebalance hooks.
//!
//! The consumer never auto-commits. The pipeline commits what the [`OffsetTracker`] says is final.
//! A rebalance is handled here, inside librdkafka's callback:
//! - on revoke, the final prefix of each revoked partition is committed synchronously, then the
//!   partition is dropped from the tracker. Work still in flight for it finishes, but is not
//!   committed by us: the partition's next owner replays it, and external versions make the
//!   repeat harmless;
//! - on assign, each partition starts a fresh epoch in the tracker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use super::offsets::OffsetTracker;

/// Shared between the consumer's callbacks and the pipeline.
pub struct IndexerContext {
    topic: String,
    tracker: Arc<Mutex<OffsetTracker>>,
    rebalanced: Arc<AtomicBool>,
}

impl IndexerContext {
    /// A context for `topic`, sharing `tracker` with the pipeline.
    pub fn new(topic: &str, tracker: Arc<Mutex<OffsetTracker>>) -> Self {
        Self {
            topic: topic.to_owned(),
            tracker,
            rebalanced: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Set after every assignment change; the pipeline clears it when it has re-applied pauses.
    pub fn rebalanced_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.rebalanced)
    }
}

impl ClientContext for IndexerContext {}

impl ConsumerContext for IndexerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        let mut commits = TopicPartitionList::new();
        {
            let mut tracker = lock(&self.tracker);
            for element in revoked.elements_for_topic(&self.topic) {
                if let Some(offset) = tracker.revoke(element.partition()) {
                    let _ = commits.add_partition_offset(
                        &self.topic,
                        element.partition(),
                        Offset::Offset(offset),
                    );
                }
            }
        }
        let partitions: Vec<i32> = revoked.elements().iter().map(|e| e.partition()).collect();
        tracing::info!(topic = %self.topic, ?partitions, "partitions revoked");
        if commits.count() > 0 {
            if let Err(e) = consumer.commit(&commits, CommitMode::Sync) {
                metrics::counter!("offsets.commit_failures").increment(1);
                tracing::warn!(error = %e, "committing revoked partitions failed; their next owner replays from the previous commit");
            }
        }
        self.rebalanced.store(true, Ordering::SeqCst);
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(assigned) => {
                let mut tracker = lock(&self.tracker);
                let partitions: Vec<i32> = assigned
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                for p in &partitions {
                    tracker.assign(*p);
                }
                tracing::info!(topic = %self.topic, ?partitions, "partitions assigned");
            }
            Rebalance::Error(e) => {
                // The assignment is unknown now: as after a revoke, work in flight no longer
                // counts, and the partitions start afresh when they are assigned again.
                let mut tracker = lock(&self.tracker);
                let partitions: Vec<i32> = tracker.assigned().collect();
                for p in &partitions {
                    tracker.revoke(*p);
                }
                tracing::error!(error = %e, ?partitions, "rebalance failed; dropped the partitions' work in flight");
            }
            Rebalance::Revoke(_) => {}
        }
        self.rebalanced.store(true, Ordering::SeqCst);
    }
}

/// Locks the tracker; a poisoned lock only means another thread panicked mid-update, and the
/// tracker's state is still a valid (conservative) record, so it is used as is.
pub fn lock(tracker: &Mutex<OffsetTracker>) -> std::sync::MutexGuard<'_, OffsetTracker> {
    tracker
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The consumer settings every indexer uses, before user overrides.
pub fn consumer_config(base: &ClientConfig, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Commands of aborted transactions are never applied, and the transaction markers'
        // offsets are stepped over (librdkafka's default, stated because the replay relies on it).
        .set("isolation.level", "read_committed")
        // librdkafka prefetches up to 100,000 messages per partition by default, which makes
        // memory follow the backlog. The pipeline's own budget is a few thousand messages, so a
        // capped prefetch keeps the footprint flat. 16 MB rather than 8: a broker may answer a
        // fetch with more than was asked (the test broker sends whole partitions), and with 8 MB
        // such an answer filled the queue, so the other partitions were asked for only once it
        // had drained, and the bulk requests ran dry while the broker built that answer.
        .set("queued.min.messages", "10000")
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.max.bytes", "8388608")
        // `fetch.wait.max.ms` stays at librdkafka's 500: a broker answers a fetch as soon as it
        // has data, so the wait only bounds a fetch that finds none. 100 ms brought the test
        // broker's first answer 0.2 s sooner (it waits out the limit when it cannot fill the
        // fetch), but cost an idle `run` 1.25 ms of CPU a second more, on any broker
        // (docs/benchmarks.md).
        //
        // The loop polls continuously, even while paused, so a short poll interval costs nothing.
        // It is also the rebalance timeout: a JoinGroup the broker never answers is retried after
        // a minute instead of librdkafka's default five.
        .set("max.poll.interval.ms", "60000");
    for (key, value) in base.config_map().iter() {
        config.set(*key, *value);
    }
    config
}

/// Closes the consumer: it revokes its partitions (committing what is final) and leaves the group.
///
/// librdkafka's close waits for the group coordinator without limit, and a coordinator that never
/// answers must not keep the process from exiting. So the close runs on a thread of its own and is
/// abandoned after `within`: the group then rebalances when this member's session expires, and
/// nothing past the final commit is lost, because the next owner replays it.
///
/// The consumer closes when its last handle goes. The lag monitor may hold one for the
/// milliseconds a sample takes, so the thread waits for it, within the same limit.
pub async fn close(consumer: Arc<StreamConsumer<IndexerContext>>, within: Duration) {
    let (done, closed) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("consumer-close".into())
        .spawn(move || {
            let mut consumer = consumer;
            let waiting = std::time::Instant::now();
            let last = loop {
                match Arc::try_unwrap(consumer) {
                    Ok(last) => break last,
                    Err(shared) => {
                        consumer = shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            };
            // Any wait here was for a lag sample's call in flight; a long one is worth knowing.
            let waited_ms = waiting.elapsed().as_millis() as u64;
            if waited_ms >= 1_000 {
                tracing::info!(
                    waited_ms,
                    "waited for a lag sample to finish before leaving the group"
                );
            }
            drop(last);
            let _ = done.send(());
        });
    if let Err(e) = spawned {
        // The failed spawn has already dropped the consumer, and so closed it here, unbounded.
        tracing::warn!(error = %e, "could not start a thread to close the consumer; it was closed without a time limit");
        return;
    }
    match tokio::time::timeout(within, closed).await {
        Ok(_) => tracing::debug!("left the consumer group"),
        Err(_) => tracing::warn!(
            timeout_secs = within.as_secs(),
            "the group coordinator did not confirm this member's leave in time; exiting anyway (the group rebalances when the session expires)"
        ),
    }
}
