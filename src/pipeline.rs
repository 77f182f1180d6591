//! `dual-indexer run`: the replay loop that ties source, transform, sink and dead letters together.
//!
//! ```text
//! Kafka ─recv─▶ track offset ─▶ prepare (decode + transform) ─┬─▶ batch ─▶ BulkSink::deliver ─┐
//!                                                             └─▶ dead-letter topic ◀──────────┤
//!        ◀──── commit the final prefix ◀──── OffsetTracker::finish ◀───── final outcomes ──────┘
//! ```
//!
//! One task owns the loop; bulk requests and dead-letter writes run as spawned tasks whose
//! results come back to it. Memory is bounded by a budget of messages received but not yet
//! final. Past it, the loop first *holds*: it stops taking messages from librdkafka's queue,
//! whose prefetch is capped, and librdkafka stops fetching once that queue is full. Below half
//! the budget it reads on, and nothing was fetched twice. Only a hold longer than
//! [`HOLD_BEFORE_PAUSE`] (an Elasticsearch outage, say) pauses every assigned partition and polls
//! again, so the group membership and rebalances are served however long the outage lasts.
//! Pausing is the last resort because librdkafka discards a paused partition's prefetched
//! messages, and the broker must serve them again after the resume.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::dlq::{DeadLetter, DeadLetterQueue, SendError};
use crate::lag::rule::Status;
use crate::sink::retry::backoff;
use crate::sink::{Batch, BulkSink, Fatal, ItemOutcome, OpKind, Provenance};
use crate::source::kafka::{self, lock, IndexerContext};
use crate::source::offsets::{OffsetTracker, Ticket};
use crate::status::StatusBoard;
use crate::transform::{self, Origin, Rejection, Schema, VersionSource};

/// Everything `run` needs besides the Kafka and Elasticsearch connections.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The command topic.
    pub topic: String,
    /// This indexer's consumer group.
    pub group: String,
    /// Where unappliable commands go.
    pub dlq_topic: String,
    /// librdkafka settings for the dead-letter producer only, applied over the shared ones.
    pub dlq_kafka: Vec<(String, String)>,
    /// Where the external version comes from.
    pub version_source: VersionSource,
    /// The document shape written.
    pub schema: Schema,
    /// A batch is sent once it holds this many documents...
    pub batch_max_docs: usize,
    /// ...or this many bytes...
    pub batch_max_bytes: usize,
    /// ...or its first document has waited this long.
    pub linger: Duration,
    /// Bulk requests in flight at once.
    pub max_in_flight: usize,
    /// How often final offsets are committed.
    pub commit_interval: Duration,
    /// How long a shutdown waits for in-flight work before committing what is final.
    pub drain_timeout: Duration,
    /// How often a progress line is logged.
    pub progress_interval: Duration,
    /// With offset versions, the topic's partition count the target index was built from: a
    /// message from a partition at or past it means partitions were added, and offsets no
    /// longer order a document's commands.
    pub partitions_recorded: Option<i32>,
}

/// What a run did, for the final summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages received.
    pub consumed: u64,
    /// Documents indexed.
    pub indexed: u64,
    /// Documents deleted.
    pub deleted: u64,
    /// Writes that found a newer or equal version already there.
    pub already_applied: u64,
    /// Messages sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Messages received but not final when the run ended (they are replayed by the next run).
    pub unfinished: u64,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// SIGTERM, Ctrl-C or the caller's shutdown future.
    Signal,
    /// `--until-caught-up` saw the lag closed.
    CaughtUp,
}

enum Done {
    Bulk {
        result: Result<Vec<(Ticket, ItemOutcome)>, Fatal>,
        /// The memory the batch held, now freed.
        bytes: usize,
    },
    DeadLettered {
        ticket: Ticket,
        class: &'static str,
    },
    /// A dead letter no longer needed: its partition was revoked before it could be written.
    Dropped,
    /// The dead-letter topic refuses this indexer for good (authorisation).
    DeadLetterFatal(String),
    /// Kafka's answer to a commit: each partition and offset, with the error if it failed.
    Committed(Vec<(i32, i64, Option<String>)>),
}

enum Event<'a> {
    Shutdown,
    Finished(Result<Done, tokio::task::JoinError>),
    Linger,
    Commit,
    LagStatus(Result<(), watch::error::RecvError>),
    Progress,
    HoldExpired,
    Message(Result<BorrowedMessage<'a>, rdkafka::error::KafkaError>),
}

struct PartitionMetrics {
    consumed: metrics::Counter,
    indexed: metrics::Counter,
    deleted: metrics::Counter,
    already_applied: metrics::Counter,
    committed: metrics::Gauge,
}

impl PartitionMetrics {
    fn new(topic: &str, partition: i32) -> Self {
        let labels = [
            ("topic", topic.to_owned()),
            ("partition", partition.to_string()),
        ];
        Self {
            consumed: metrics::counter!("messages.consumed", &labels),
            indexed: metrics::counter!("documents.indexed", &labels),
            deleted: metrics::counter!("documents.deleted", &labels),
            already_applied: metrics::counter!("documents.already_applied", &labels),
            committed: metrics::gauge!("offsets.committed", &labels),
        }
    }
}

/// How long leaving the consumer group may take at exit, after the drain and the final commit.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the loop may hold off reading under backpressure before it pauses the partitions
/// and polls again. Not polling delays rebalances and, past `max.poll.interval.ms`, would cost
/// the group membership, so the hold is also capped at half that interval.
pub const HOLD_BEFORE_PAUSE: Duration = Duration::from_secs(5);

/// The least time between two commits made because the loop went idle (see
/// `Pipeline::commit_if_idle`); the regular commits keep `--commit-interval-ms`.
const IDLE_COMMIT_GAP: Duration = Duration::from_millis(200);

/// How full the loop's budget is: messages received but not final, and the bytes of the batches
/// that hold them (open, queued and in flight). A revoke drops messages from the count while
/// their batches may still hold memory, so both are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Load {
    pending: usize,
    max_pending: usize,
    bytes: usize,
    max_bytes: usize,
}

impl Load {
    fn full(&self) -> bool {
        self.pending >= self.max_pending || self.bytes >= self.max_bytes
    }

    fn below_half(&self) -> bool {
        self.pending <= self.max_pending / 2 && self.bytes <= self.max_bytes / 2
    }
}

/// How the loop reads under backpressure (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Taking messages as they come.
    Reading,
    /// The budget is full: messages stay in librdkafka's queue until `until`.
    Holding { until: tokio::time::Instant },
    /// Held too long: the assignment is paused and the consumer polled for rebalances only.
    Paused,
}

impl Flow {
    /// The state after this one under `load`: hold when the budget is full, pause once the hold
    /// runs out, read on below half.
    fn next(self, load: Load, now: tokio::time::Instant, hold_limit: Duration) -> Flow {
        match self {
            Flow::Reading if load.full() => Flow::Holding {
                until: now + hold_limit,
            },
            Flow::Holding { .. } | Flow::Paused if load.below_half() => Flow::Reading,
            Flow::Holding { until } if now >= until => Flow::Paused,
            unchanged => unchanged,
        }
    }
}

/// The replay loop's state.
pub struct Pipeline {
    settings: RunSettings,
    consumer: Arc<StreamConsumer<IndexerContext>>,
    tracker: Arc<Mutex<OffsetTracker>>,
    rebalanced: Arc<AtomicBool>,
    sink: BulkSink,
    dlq: DeadLetterQueue,
    batch: Batch,
    batch_deadline: Option<tokio::time::Instant>,
    ready: VecDeque<Batch>,
    tasks: JoinSet<Done>,
    bulk_in_flight: usize,
    /// Batches handed to the sink so far, numbering them for the logs.
    batches_sent: u64,
    flow: Flow,
    /// When offsets were last handed to the consumer to commit.
    last_commit: Option<tokio::time::Instant>,
    /// Whether a commit is in flight.
    committing: bool,
    /// How long a hold may last: [`HOLD_BEFORE_PAUSE`], or half of `max.poll.interval.ms`.
    hold_limit: Duration,
    max_pending: usize,
    /// The bytes of the batches sealed but not yet finished (queued or in flight).
    sealed_bytes: usize,
    max_bytes: usize,
    board: Arc<StatusBoard>,
    summary: Summary,
    metrics: HashMap<i32, PartitionMetrics>,
    started: Instant,
    /// When the last progress line was logged, and the messages consumed by then.
    last_progress: (Instant, u64),
}

impl Pipeline {
    /// Connects to Kafka (consumer and dead-letter producer) and subscribes to the topic.
    pub fn new(
        kafka_config: &ClientConfig,
        sink: BulkSink,
        settings: RunSettings,
        board: Arc<StatusBoard>,
    ) -> anyhow::Result<Self> {
        let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let context = IndexerContext::new(&settings.topic, Arc::clone(&tracker));
        let rebalanced = context.rebalanced_flag();
        let consumer_config = kafka::consumer_config(kafka_config, &settings.group);
        let consumer = kafka::subscribe(&consumer_config, context, &settings.topic)
            .map_err(|e| anyhow::anyhow!("subscribing to `{}`: {e}", settings.topic))?;
        let mut dlq_config = kafka_config.clone();
        for (key, value) in &settings.dlq_kafka {
            dlq_config.set(key, value);
        }
        let dlq = DeadLetterQueue::new(&dlq_config, &settings.dlq_topic, &settings.topic)?;
        let max_pending = settings.batch_max_docs * (settings.max_in_flight + 2);
        let max_bytes = settings.batch_max_bytes * (settings.max_in_flight + 2);
        let sink = {
            let tracker = Arc::clone(&tracker);
            sink.with_wanted(Arc::new(move |ticket| lock(&tracker).is_current(ticket)))
        };
        let hold_limit = consumer_config
            .get("max.poll.interval.ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .map_or(HOLD_BEFORE_PAUSE, |ms| {
                HOLD_BEFORE_PAUSE.min(Duration::from_millis(ms / 2))
            });
        Ok(Self {
            consumer: Arc::new(consumer),
            tracker,
            rebalanced,
            sink,
            dlq,
            batch: Batch::with_capacity(
                settings.batch_max_bytes.min(16 << 20),
                settings.batch_max_docs,
            ),
            batch_deadline: None,
            ready: VecDeque::new(),
            tasks: JoinSet::new(),
            bulk_in_flight: 0,
            batches_sent: 0,
            flow: Flow::Reading,
            last_commit: None,
            committing: false,
            hold_limit,
            max_pending,
            sealed_bytes: 0,
            max_bytes,
            board,
            summary: Summary::default(),
            metrics: HashMap::new(),
            started: Instant::now(),
            last_progress: (Instant::now(), 0),
            settings,
        })
    }

    /// Runs until `shutdown` resolves, a fatal error, or, given `until_caught_up` (the lag
    /// monitor's status channel), until the group is CAUGHT_UP. Always drains and commits what
    /// is final before returning.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut until_caught_up: Option<watch::Receiver<Option<Status>>>,
    ) -> anyhow::Result<(Ending, Summary)> {
        let consumer = Arc::clone(&self.consumer);
        let mut commit_tick = tokio::time::interval(self.settings.commit_interval);
        let mut progress_tick = tokio::time::interval(self.settings.progress_interval);
        progress_tick.reset();
        tokio::pin!(shutdown);
        let outcome: anyhow::Result<Ending> = loop {
            let deadline = self.batch_deadline;
            let (reading, hold_until) = match self.flow {
                Flow::Holding { until } => (false, Some(until)),
                Flow::Reading | Flow::Paused => (true, None),
            };
            let lag_changed = async {
                match until_caught_up.as_mut() {
                    Some(rx) => rx.changed().await,
                    None => std::future::pending().await,
                }
            };
            let event = tokio::select! {
                biased;
                _ = &mut shutdown => Event::Shutdown,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => Event::Finished(done),
                _ = sleep_until(deadline) => Event::Linger,
                _ = commit_tick.tick() => Event::Commit,
                changed = lag_changed => Event::LagStatus(changed),
                _ = progress_tick.tick() => Event::Progress,
                _ = sleep_until(hold_until) => Event::HoldExpired,
                message = consumer.recv(), if reading => Event::Message(message),
            };
            match event {
                Event::Shutdown => break Ok(Ending::Signal),
                Event::Finished(done) => {
                    if let Err(e) = self.on_finished(done) {
                        break Err(e);
                    }
                    self.commit_if_idle();
                }
                Event::Linger => self.seal(),
                Event::Commit => {
                    self.commit();
                    self.board.pipeline_tick(self.counters());
                    self.board.holding(self.sink.holding());
                }
                Event::LagStatus(Ok(())) => {
                    let caught_up = until_caught_up
                        .as_ref()
                        .is_some_and(|rx| *rx.borrow() == Some(Status::CaughtUp));
                    if caught_up {
                        break Ok(Ending::CaughtUp);
                    }
                }
                Event::LagStatus(Err(_)) => {
                    tracing::error!(
                        "the lag monitor stopped; --until-caught-up can no longer end the run"
                    );
                    until_caught_up = None;
                }
                Event::Progress => self.log_progress(),
                // `apply_backpressure` below turns the expired hold into a pause.
                Event::HoldExpired => {}
                Event::Message(Ok(message)) => {
                    if let Err(e) = self.on_message(&message) {
                        break Err(e);
                    }
                }
                Event::Message(Err(e)) => {
                    metrics::counter!("kafka.errors").increment(1);
                    tracing::warn!(error = %e, "Kafka consumer error");
                }
            }
            self.apply_backpressure();
        };
        let drained = match &outcome {
            Ok(_) => self.drain().await,
            Err(_) => Ok(()),
        };
        self.final_commit();
        self.summary.unfinished = lock(&self.tracker).pending() as u64;
        let summary = self.summary.clone();
        drop(consumer);
        // Work the drain gave up on is stopped before the member leaves its group.
        let Self {
            consumer, tasks, ..
        } = self;
        drop(tasks);
        kafka::close(consumer, CLOSE_TIMEOUT).await;
        let ending = outcome?;
        drained?;
        Ok((ending, summary))
    }

    fn on_message(&mut self, message: &BorrowedMessage<'_>) -> anyhow::Result<()> {
        let partition = message.partition();
        let offset = message.offset();
        if let Some(count) = self.settings.partitions_recorded {
            if partition >= count {
                anyhow::bail!(
                    "{}",
                    crate::sink::layout::partition_change_error(
                        &self.settings.topic,
                        count,
                        partition + 1
                    )
                );
            }
        }
        let Some(ticket) = lock(&self.tracker).track(partition, offset) else {
            return Ok(());
        };
        self.summary.consumed += 1;
        self.partition_metrics(partition).consumed.increment(1);
        let key = message.key();
        let prepared = match message.payload() {
            Some(payload) => transform::prepare_for(
                self.settings.schema,
                payload,
                Origin { key, offset },
                self.settings.version_source,
            ),
            None => Err(Rejection::Decode(
                "the message has no payload (a tombstone is not a command)".into(),
            )),
        };
        let payload = message.payload().unwrap_or_default();
        match prepared {
            Ok(write) => {
                self.batch.push(
                    write,
                    Provenance {
                        ticket,
                        key,
                        payload,
                    },
                );
                if self.batch_deadline.is_none() {
                    self.batch_deadline = Some(tokio::time::Instant::now() + self.settings.linger);
                }
                if self.batch.len() >= self.settings.batch_max_docs
                    || self.batch.body.len() >= self.settings.batch_max_bytes
                {
                    self.seal();
                }
            }
            Err(rejection) => self.dead_letter(
                DeadLetter {
                    key: key.map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                    partition,
                    offset,
                    class: rejection.class(),
                    reason: rejection.to_string(),
                    es_type: None,
                    attempts: 0,
                    truncated_from: None,
                },
                ticket,
            ),
        }
        Ok(())
    }

    fn partition_metrics(&mut self, partition: i32) -> &PartitionMetrics {
        let topic = &self.settings.topic;
        self.metrics
            .entry(partition)
            .or_insert_with(|| PartitionMetrics::new(topic, partition))
    }

    /// Closes the current batch and sends what the in-flight limit allows.
    fn seal(&mut self) {
        self.batch_deadline = None;
        if !self.batch.is_empty() {
            let capacity = self.settings.batch_max_bytes.min(16 << 20);
            self.sealed_bytes += self.batch.held_bytes();
            self.ready.push_back(std::mem::replace(
                &mut self.batch,
                Batch::with_capacity(capacity, self.settings.batch_max_docs),
            ));
        }
        self.dispatch();
    }

    /// Sends queued batches into free in-flight slots.
    fn dispatch(&mut self) {
        while self.bulk_in_flight < self.settings.max_in_flight {
            let Some(batch) = self.ready.pop_front() else {
                break;
            };
            metrics::histogram!("bulk.batch_docs").record(batch.len() as f64);
            metrics::histogram!("bulk.batch_bytes").record(batch.body.len() as f64);
            let sink = self.sink.clone();
            // Every log line of this batch's delivery (retries, refusals) carries its number and
            // the partition offset ranges it holds.
            self.batches_sent += 1;
            let span = tracing::info_span!("bulk", batch = self.batches_sent, docs = batch.len(), origins = %batch.origins());
            let bytes = batch.held_bytes();
            self.tasks.spawn(
                async move {
                    Done::Bulk {
                        result: sink.deliver(batch).await,
                        bytes,
                    }
                }
                .instrument(span),
            );
            self.bulk_in_flight += 1;
        }
        metrics::gauge!("bulk.in_flight").set(self.bulk_in_flight as f64);
    }

    /// Writes a dead letter, retrying until the broker takes it: its offset is not final before.
    /// A letter too large for the broker is cut down (see `dlq`), and one that stopped being
    /// needed (its partition was revoked) is given up.
    fn dead_letter(&mut self, mut letter: DeadLetter, ticket: Ticket) {
        let dlq = self.dlq.clone();
        let tracker = Arc::clone(&self.tracker);
        self.tasks.spawn(async move {
            let mut failures = 0u32;
            loop {
                match dlq.send(&letter).await {
                    Ok(()) => return Done::DeadLettered { ticket, class: letter.class },
                    Err(SendError::TooLarge(e)) if letter.truncate() => {
                        metrics::counter!("dlq.truncated").increment(1);
                        tracing::warn!(
                            dlq_topic = dlq.topic(), partition = letter.partition, offset = letter.offset, error = %e,
                            payload_bytes = letter.payload.len(),
                            "the dead letter is too large for the broker; writing it with a truncated payload and a `{}` header",
                            crate::dlq::headers::TRUNCATED
                        );
                        continue;
                    }
                    Err(SendError::Unauthorized(e)) => {
                        return Done::DeadLetterFatal(format!(
                            "the broker refuses this indexer's writes to the dead-letter topic `{}`: {e}. Grant it Write (and Describe) on that topic, or name another with --dlq-topic",
                            dlq.topic()
                        ))
                    }
                    Err(SendError::TooLarge(e) | SendError::Other(e)) => {
                        metrics::counter!("dlq.write_failures").increment(1);
                        tracing::error!(
                            dlq_topic = dlq.topic(), partition = letter.partition, offset = letter.offset, error = %e,
                            "cannot write to the dead-letter topic; partition {} cannot commit past offset {} until it can",
                            letter.partition, letter.offset
                        );
                        tokio::time::sleep(backoff(failures, Duration::from_millis(500), Duration::from_secs(30), 1.0)).await;
                        failures = failures.saturating_add(1);
                        if !lock(&tracker).is_current(ticket) {
                            return Done::Dropped;
                        }
                    }
                }
            }
        });
    }

    /// Drops the queued and open writes of partitions no longer assigned (revoked, or
    /// rewound): their next owner applies them, and sending them late could land them after
    /// newer writes of the same documents.
    fn drop_revoked(&mut self) {
        let tracker = lock(&self.tracker);
        let mut dropped = self.batch.retain(|item| tracker.is_current(item.ticket));
        for batch in self.ready.iter_mut() {
            let before = batch.held_bytes();
            dropped += batch.retain(|item| tracker.is_current(item.ticket));
            self.sealed_bytes -= before - batch.held_bytes();
        }
        drop(tracker);
        self.ready.retain(|batch| !batch.is_empty());
        if dropped > 0 {
            tracing::info!(dropped, "dropped the queued writes of revoked partitions");
        }
    }

    fn on_finished(&mut self, done: Result<Done, tokio::task::JoinError>) -> anyhow::Result<()> {
        match done.map_err(|e| anyhow::anyhow!("an internal task failed: {e}"))? {
            Done::Bulk { result, bytes } => {
                self.bulk_in_flight -= 1;
                self.sealed_bytes -= bytes;
                for (ticket, outcome) in result? {
                    self.on_outcome(ticket, outcome);
                }
                self.dispatch();
            }
            Done::DeadLettered { ticket, class } => {
                if lock(&self.tracker).finish(ticket) {
                    self.summary.dead_lettered += 1;
                }
                metrics::counter!("messages.dead_lettered", "class" => class).increment(1);
            }
            Done::Dropped => {}
            Done::Committed(results) => {
                self.committing = false;
                self.on_committed(results);
            }
            Done::DeadLetterFatal(reason) => anyhow::bail!("{reason}"),
        }
        Ok(())
    }

    fn on_outcome(&mut self, ticket: Ticket, outcome: ItemOutcome) {
        let finished = match &outcome {
            ItemOutcome::DeadLetter { .. } => false,
            _ => lock(&self.tracker).finish(ticket),
        };
        match outcome {
            ItemOutcome::Applied(OpKind::Index) if finished => {
                self.summary.indexed += 1;
                self.partition_metrics(ticket.partition)
                    .indexed
                    .increment(1);
            }
            ItemOutcome::Applied(OpKind::Delete) if finished => {
                self.summary.deleted += 1;
                self.partition_metrics(ticket.partition)
                    .deleted
                    .increment(1);
            }
            ItemOutcome::AlreadyApplied if finished => {
                self.summary.already_applied += 1;
                self.partition_metrics(ticket.partition)
                    .already_applied
                    .increment(1);
            }
            ItemOutcome::DeadLetter {
                class,
                reason,
                es_type,
                attempts,
                original,
            } => {
                self.dead_letter(
                    DeadLetter {
                        key: original.key,
                        payload: original.payload,
                        partition: ticket.partition,
                        offset: ticket.offset,
                        class,
                        reason,
                        es_type,
                        attempts,
                        truncated_from: None,
                    },
                    ticket,
                );
            }
            _ => {}
        }
    }

    fn apply_backpressure(&mut self) {
        // After a rebalance the consumer's pause state of the new assignment is not known here:
        // librdkafka can keep a partition paused across a revoke and re-assign. So the wanted
        // state is applied to the whole assignment explicitly, paused or not. (Assuming "a new
        // assignment starts unpaused" stalled a member for good in the rebalance-storm test.)
        let rebalanced = self.rebalanced.swap(false, Ordering::SeqCst);
        if rebalanced {
            self.drop_revoked();
        }
        let pending = lock(&self.tracker).pending();
        let load = Load {
            pending,
            max_pending: self.max_pending,
            bytes: self.sealed_bytes + self.batch.held_bytes(),
            max_bytes: self.max_bytes,
        };
        metrics::gauge!("pipeline.pending").set(pending as f64);
        metrics::gauge!("pipeline.held_bytes").set(load.bytes as f64);
        let now = tokio::time::Instant::now();
        let wanted = self.flow.next(load, now, self.hold_limit);
        let (was_paused, pause) = (self.flow == Flow::Paused, wanted == Flow::Paused);
        if pause == was_paused && !rebalanced {
            return self.set_flow(wanted, pending);
        }
        let result = self.consumer.assignment().and_then(|assignment| {
            if pause {
                self.consumer.pause(&assignment)
            } else {
                self.consumer.resume(&assignment)
            }
        });
        match result {
            Ok(()) => self.set_flow(wanted, pending),
            Err(e) => {
                // Try again on a later event, the rebalance included; a failed pause holds on
                // for another second rather than spin on an expired hold.
                self.rebalanced.fetch_or(rebalanced, Ordering::SeqCst);
                if pause {
                    self.set_flow(
                        Flow::Holding {
                            until: now + Duration::from_secs(1),
                        },
                        pending,
                    );
                }
                tracing::warn!(error = %e, pause, "pausing or resuming partitions failed");
            }
        }
    }

    fn set_flow(&mut self, flow: Flow, pending: usize) {
        if flow == self.flow {
            return;
        }
        self.flow = flow;
        let (holding, paused) = self.flow_flags();
        metrics::gauge!("pipeline.holding").set(if holding { 1.0 } else { 0.0 });
        metrics::gauge!("pipeline.paused").set(if paused { 1.0 } else { 0.0 });
        tracing::debug!(pending, holding, paused, "backpressure");
    }

    /// Whether the loop holds off reading, and whether the partitions are paused.
    fn flow_flags(&self) -> (bool, bool) {
        (
            matches!(self.flow, Flow::Holding { .. }),
            self.flow == Flow::Paused,
        )
    }

    /// Commits at once when every message received is final, so that the group's lag reads zero
    /// as soon as the work is done rather than at the next tick. At most once per
    /// [`IDLE_COMMIT_GAP`], so a slow live stream that idles after every bulk does not commit
    /// after each one.
    fn commit_if_idle(&mut self) {
        let due = self
            .last_commit
            .is_none_or(|at| at.elapsed() >= IDLE_COMMIT_GAP.min(self.settings.commit_interval));
        if due && lock(&self.tracker).pending() == 0 {
            self.commit();
        }
    }

    /// Hands the final offsets to Kafka. The commit runs on a blocking thread, so the loop never
    /// waits on the group coordinator, and its result comes back as [`Done::Committed`]: an offset
    /// counts as committed only once Kafka confirmed it, and a failed one is offered again by the
    /// next commit. One commit is in flight at a time.
    fn commit(&mut self) {
        if self.committing {
            return;
        }
        let commits = lock(&self.tracker).take_commits();
        if commits.is_empty() {
            return;
        }
        self.committing = true;
        self.last_commit = Some(tokio::time::Instant::now());
        let (consumer, topic) = (Arc::clone(&self.consumer), self.settings.topic.clone());
        self.tasks.spawn(async move {
            let failed = commits.clone();
            let results =
                tokio::task::spawn_blocking(move || commit_now(&consumer, &topic, &commits))
                    .await
                    .unwrap_or_else(|e| {
                        let reason = format!("the commit thread failed: {e}");
                        failed
                            .into_iter()
                            .map(|(p, o)| (p, o, Some(reason.clone())))
                            .collect()
                    });
            Done::Committed(results)
        });
    }

    /// Commits every partition's final offsets before the run ends, waiting for the answer.
    fn final_commit(&mut self) {
        let points = lock(&self.tracker).commit_points();
        if !points.is_empty() {
            let results = commit_now(&self.consumer, &self.settings.topic, &points);
            self.on_committed(results);
        }
    }

    /// Records what Kafka answered to a commit.
    fn on_committed(&mut self, results: Vec<(i32, i64, Option<String>)>) {
        let mut failed = Vec::new();
        for (partition, offset, error) in results {
            lock(&self.tracker).commit_result(partition, offset, error.is_none());
            match error {
                None => self
                    .partition_metrics(partition)
                    .committed
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

    fn counters(&self) -> serde_json::Value {
        let s = &self.summary;
        serde_json::json!({
            "consumed": s.consumed,
            "indexed": s.indexed,
            "deleted": s.deleted,
            "already_applied": s.already_applied,
            "dead_lettered": s.dead_lettered,
            "pending": lock(&self.tracker).pending(),
            "holding": self.flow_flags().0,
            "paused": self.flow_flags().1,
            "bulk_in_flight": self.bulk_in_flight,
        })
    }

    async fn drain(&mut self) -> anyhow::Result<()> {
        self.seal();
        let deadline = tokio::time::Instant::now() + self.settings.drain_timeout;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(done)) => self.on_finished(done)?,
                Ok(None) => break,
                Err(_) => {
                    tracing::warn!(
                        unfinished = lock(&self.tracker).pending(),
                        "drain timed out; unfinished messages stay uncommitted and are replayed by the next run"
                    );
                    break;
                }
            }
        }
        Ok(())
    }

    /// Logs the counters, the rate since the previous progress line and the mean rate since the
    /// start (which, unlike the former, keeps falling once the backlog is done).
    fn log_progress(&mut self) {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let (since, consumed_then) = std::mem::replace(
            &mut self.last_progress,
            (Instant::now(), self.summary.consumed),
        );
        let recent = (self.summary.consumed - consumed_then) as f64
            / since.elapsed().as_secs_f64().max(1e-3);
        let s = &self.summary;
        tracing::info!(
            consumed = s.consumed,
            indexed = s.indexed,
            deleted = s.deleted,
            already_applied = s.already_applied,
            dead_lettered = s.dead_lettered,
            pending = lock(&self.tracker).pending(),
            rate_per_sec = recent.round(),
            mean_rate_per_sec = (s.consumed as f64 / elapsed).round(),
            holding = self.flow_flags().0,
            paused = self.flow_flags().1,
            "progress"
        );
    }
}

/// Commits `commits` and waits for Kafka's answer: each partition and offset, with the error if
/// it failed (a commit can fail for some partitions only).
fn commit_now(
    consumer: &StreamConsumer<IndexerContext>,
    topic: &str,
    commits: &[(i32, i64)],
) -> Vec<(i32, i64, Option<String>)> {
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 6_000;
    const MAX_BYTES: usize = 30 << 20;
    const HOLD: Duration = Duration::from_secs(5);

    fn load(pending: usize, bytes: usize) -> Load {
        Load {
            pending,
            max_pending: MAX,
            bytes,
            max_bytes: MAX_BYTES,
        }
    }

    #[test]
    fn a_full_budget_holds_first_and_reads_on_below_half_without_pausing() {
        let now = tokio::time::Instant::now();
        assert_eq!(
            Flow::Reading.next(load(MAX - 1, 0), now, HOLD),
            Flow::Reading
        );
        let held = Flow::Reading.next(load(MAX, 0), now, HOLD);
        assert_eq!(held, Flow::Holding { until: now + HOLD });
        let later = now + HOLD / 2;
        assert_eq!(held.next(load(MAX / 2 + 1, 0), later, HOLD), held);
        assert_eq!(held.next(load(MAX / 2, 0), later, HOLD), Flow::Reading);
    }

    #[test]
    fn a_hold_that_runs_out_pauses_and_a_pause_lifts_below_half() {
        let now = tokio::time::Instant::now();
        let held = Flow::Reading.next(load(MAX, 0), now, HOLD);
        assert_eq!(held.next(load(MAX, 0), now + HOLD, HOLD), Flow::Paused);
        assert_eq!(
            Flow::Paused.next(load(MAX / 2 + 1, 0), now, HOLD),
            Flow::Paused
        );
        assert_eq!(
            Flow::Paused.next(load(MAX / 2, 0), now, HOLD),
            Flow::Reading
        );
    }

    #[test]
    fn the_budget_freed_at_the_moment_the_hold_runs_out_reads_on_rather_than_pauses() {
        let now = tokio::time::Instant::now();
        let held = Flow::Reading.next(load(MAX, 0), now, HOLD);
        assert_eq!(held.next(load(0, 0), now + HOLD, HOLD), Flow::Reading);
    }

    #[test]
    fn memory_held_by_batches_bounds_reading_even_when_few_messages_count_as_pending() {
        // After a revoke, the tracker no longer counts the revoked messages, but their batches
        // may still hold memory: the bytes alone must hold the loop, and keep it held.
        let now = tokio::time::Instant::now();
        let held = Flow::Reading.next(load(0, MAX_BYTES), now, HOLD);
        assert_eq!(held, Flow::Holding { until: now + HOLD });
        assert_eq!(held.next(load(0, MAX_BYTES / 2 + 1), now, HOLD), held);
        assert_eq!(held.next(load(0, MAX_BYTES / 2), now, HOLD), Flow::Reading);
    }
}
