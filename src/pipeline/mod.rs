//! `dual-indexer run`: the replay loop that ties source, transform, sink and dead letters together.
//!
//! ```text
//! CommandSource ─recv─▶ prepare (decode + transform) ─┬─▶ Batcher ─▶ BulkSink::deliver ─┐
//!                                                     └─▶ DeadLetterQueue::deliver ◀─────┤
//!        ◀──── commit the final prefix ◀──── CommandSource::finish ◀── final outcomes ───┘
//! ```
//!
//! One task owns the loop and only routes events; each stage owns its state: the source its
//! offsets and commits ([`crate::source::commands`]), the batcher its batches ([`batcher`]), the
//! flow its backpressure state ([`flow`]), the statistics their counters ([`stats`]). Bulk
//! requests and dead-letter writes run as spawned tasks whose results come back to the loop.

mod alarm;
mod backpressure;
pub mod batcher;
pub mod flow;
pub mod joining;
mod settings;
pub mod stats;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::dlq::{DeadLetter, DeadLetterQueue, Delivered};
use crate::lag::rule::Status;
use crate::lag::Sampled;
use crate::sink::layout::partition_change_error;
use crate::sink::{BulkSink, Early, Fatal, ItemOutcome, Provenance};
use crate::source::commands::{CommandSource, Incoming, Reader, RecvError};
use crate::source::offsets::Ticket;
use crate::status::StatusBoard;
use alarm::Alarm;
use batcher::{Batcher, Limits};
use flow::Flow;
use joining::Joining;
use stats::{Gauges, RunStats};

pub use flow::HOLD_BEFORE_PAUSE;
pub use settings::{Ending, RunSettings};
pub use stats::Summary;

/// How many messages already in librdkafka's queue the loop takes in a row without waiting on
/// its signals, answers and timers. The wait polls about ten of them, which costs more than a
/// message's own work; a burst is short enough that none of them is held back for long.
const BURST: u32 = 64;

/// A spawned task's result, routed back to the loop.
enum Done {
    Bulk {
        result: Result<Vec<(Ticket, ItemOutcome)>, Fatal>,
        /// The batch's number (see [`Pipeline::slots`]).
        batch: u64,
    },
    DeadLetter(Ticket, Delivered),
}

enum Event<'a> {
    Shutdown,
    Finished(Result<Done, tokio::task::JoinError>),
    Early(u64, Early<Ticket>),
    Committed,
    IdleCommit,
    Linger,
    Commit,
    LagStatus(Result<(), watch::error::RecvError>),
    Progress,
    HoldExpired,
    Message(Result<Option<Incoming<'a>>, RecvError>),
}

/// The replay loop's state.
pub struct Pipeline {
    settings: RunSettings,
    source: CommandSource,
    sink: BulkSink<Ticket>,
    dlq: DeadLetterQueue,
    batcher: Batcher,
    tasks: JoinSet<Done>,
    /// Batches handed to the sink so far, numbering them for the logs and for `slots`.
    batches_sent: u64,
    /// The batches holding a request slot, by number, with the bytes they hold: a delivery
    /// gives its slot back when it ends, or earlier when only retries of its own are left.
    slots: HashMap<u64, usize>,
    /// Outcomes of deliveries that still wait for a retry of some of their items.
    early_tx: mpsc::UnboundedSender<(u64, Early<Ticket>)>,
    early_rx: mpsc::UnboundedReceiver<(u64, Early<Ticket>)>,
    flow: Flow,
    /// How long a hold may last before the partitions are paused.
    hold_limit: Duration,
    max_pending: usize,
    max_bytes: usize,
    board: Arc<StatusBoard>,
    stats: RunStats,
    joining: Joining,
    /// The open batch's linger, the idle commit and the end of a hold, kept across iterations.
    linger: Alarm,
    idle_commit: Alarm,
    hold_end: Alarm,
    /// How many times backpressure paused the partitions.
    pauses: u64,
    /// How many answers the cluster has given (bulk requests finished or reported early).
    answers: u64,
    /// Messages taken in a row without the full wait (see [`BURST`]).
    burst: u32,
}

impl Pipeline {
    /// The loop over a subscribed `source`, writing through `sink`, with `dlq` for what cannot
    /// be applied. It knows neither Kafka's client nor Elasticsearch's: those stay behind the
    /// three of them.
    pub fn new(
        source: CommandSource,
        sink: BulkSink<Ticket>,
        dlq: DeadLetterQueue,
        settings: RunSettings,
        board: Arc<StatusBoard>,
    ) -> Self {
        let limits = Limits {
            max_docs: settings.batch_max_docs,
            max_bytes: settings.batch_max_bytes,
            linger: settings.linger,
            max_in_flight: settings.max_in_flight,
        };
        let (early_tx, early_rx) = mpsc::unbounded_channel();
        Self {
            sink: sink
                .with_wanted(source.wanted())
                .with_resend_slots(settings.max_in_flight),
            hold_limit: flow::hold_limit(source.max_poll_interval_ms()),
            source,
            dlq,
            batcher: Batcher::new(limits),
            tasks: JoinSet::new(),
            batches_sent: 0,
            slots: HashMap::new(),
            early_tx,
            early_rx,
            flow: Flow::Reading,
            max_pending: settings.batch_max_docs * (settings.max_in_flight + 2),
            max_bytes: settings.batch_max_bytes * (settings.max_in_flight + 2),
            board,
            stats: RunStats::new(&settings.topic),
            joining: Joining::new(std::time::Instant::now()),
            linger: Alarm::default(),
            idle_commit: Alarm::default(),
            hold_end: Alarm::default(),
            pauses: 0,
            answers: 0,
            burst: 0,
            settings,
        }
    }

    /// Runs until `shutdown` resolves, a fatal error, or, given `until_caught_up` (the lag
    /// monitor's status channel), until the group is CAUGHT_UP. Always drains and commits what
    /// is final before returning.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        mut until_caught_up: Option<watch::Receiver<Sampled>>,
    ) -> anyhow::Result<(Ending, Summary)> {
        let reader = self.source.reader();
        let mut commit_tick = tokio::time::interval(self.settings.commit_interval);
        let mut progress_tick = tokio::time::interval(self.settings.progress_interval);
        progress_tick.reset();
        tokio::pin!(shutdown);
        let outcome: anyhow::Result<Ending> = loop {
            let event = self
                .next_event(
                    &reader,
                    &mut shutdown,
                    &mut commit_tick,
                    &mut progress_tick,
                    &mut until_caught_up,
                )
                .await;
            match event {
                Event::Shutdown => break Ok(Ending::Signal),
                Event::Early(batch, early) => {
                    self.on_early(batch, early);
                    self.source.commit_if_idle();
                }
                Event::Finished(done) => {
                    if let Err(e) = self.on_finished(done) {
                        break Err(e);
                    }
                    self.source.commit_if_idle();
                }
                Event::Committed | Event::IdleCommit if self.source.idle_commit_owed() => {
                    self.source.commit_if_idle();
                }
                Event::Committed | Event::IdleCommit => {}
                Event::Linger => self.seal(),
                Event::Commit => {
                    self.source.commit();
                    // Statsd is told once a tick, not on every message (see `stats`).
                    self.stats.flush();
                    metrics::gauge!("pipeline.pending").set(self.source.pending() as f64);
                    metrics::gauge!("pipeline.held_bytes").set(self.batcher.held_bytes() as f64);
                    self.board.pipeline_tick(self.stats.counters(self.gauges()));
                    self.board.holding(self.sink.holding());
                    self.say_if_not_joined();
                }
                Event::LagStatus(Ok(())) => {
                    let caught_up = until_caught_up
                        .as_ref()
                        .is_some_and(|rx| rx.borrow().status() == Some(Status::CaughtUp));
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
                Event::Progress => self.stats.log_progress(self.gauges()),
                // `apply_backpressure` below turns the expired hold into a pause.
                Event::HoldExpired => {}
                Event::Message(Ok(Some(message))) => self.on_message(&message),
                Event::Message(Ok(None)) => {}
                Event::Message(Err(RecvError::PartitionsAdded {
                    topic,
                    recorded,
                    now,
                })) => {
                    break Err(anyhow::anyhow!(partition_change_error(
                        &topic, recorded, now
                    )))
                }
                Event::Message(Err(e)) => {
                    metrics::counter!("kafka.errors").increment(1);
                    tracing::warn!(error = %e, "Kafka consumer error");
                }
            }
            self.apply_backpressure();
        };
        drop(reader);
        let drained = match &outcome {
            Ok(_) => self.drain().await,
            Err(_) => Ok(()),
        };
        // Work the drain gave up on is stopped before the member leaves its group.
        let Self {
            source,
            tasks,
            mut stats,
            ..
        } = self;
        stats.flush();
        drop(tasks);
        let unfinished = source.close().await;
        let ending = outcome?;
        drained?;
        Ok((ending, stats.summary(unfinished as u64)))
    }

    /// Waits for whichever comes first: a signal, a task's result, a timer, a lag change, or a
    /// message (only while the flow reads). A message already in librdkafka's queue is taken
    /// without the wait, up to [`BURST`] in a row.
    async fn next_event<'r>(
        &mut self,
        reader: &'r Reader,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
        commit_tick: &mut tokio::time::Interval,
        progress_tick: &mut tokio::time::Interval,
        until_caught_up: &mut Option<watch::Receiver<Sampled>>,
    ) -> Event<'r> {
        let (reading, hold_until) = match self.flow {
            Flow::Holding { until, .. } => (false, Some(until)),
            Flow::Reading | Flow::Paused => (true, None),
        };
        if reading && self.burst < BURST {
            if let Some(message) = reader.recv().now_or_never() {
                self.burst += 1;
                return Event::Message(message);
            }
        }
        self.burst = 0;
        self.linger.set(self.batcher.deadline());
        self.idle_commit.set(self.source.idle_commit_at());
        self.hold_end.set(hold_until);
        let lag_changed = async {
            match until_caught_up.as_mut() {
                Some(rx) => rx.changed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = shutdown => Event::Shutdown,
            // Before the tasks: a delivery reports early before it ends.
            Some((batch, early)) = self.early_rx.recv() => Event::Early(batch, early),
            Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => Event::Finished(done),
            _ = self.source.commit_finished() => Event::Committed,
            _ = self.idle_commit.ring() => Event::IdleCommit,
            _ = self.linger.ring() => Event::Linger,
            _ = commit_tick.tick() => Event::Commit,
            changed = lag_changed => Event::LagStatus(changed),
            _ = progress_tick.tick() => Event::Progress,
            _ = self.hold_end.ring() => Event::HoldExpired,
            message = reader.recv(), if reading => Event::Message(message),
        }
    }

    fn on_message(&mut self, message: &Incoming<'_>) {
        let ticket = message.ticket;
        self.stats.consumed(ticket.partition);
        let key = message.key();
        let payload = message.payload().unwrap_or_default();
        let prepared = self
            .settings
            .plan
            .prepare(self.settings.schema, &message.record());
        match prepared {
            Ok(write) => {
                let provenance = Provenance {
                    ticket,
                    key,
                    payload,
                };
                if self.batcher.push(write, provenance) {
                    self.dispatch();
                }
            }
            Err(rejection) => {
                let letter =
                    DeadLetter::rejected(key, payload, ticket.partition, ticket.offset, &rejection);
                self.dead_letter(letter, ticket);
            }
        }
    }

    /// Seals the open batch and sends what fits.
    fn seal(&mut self) {
        self.batcher.seal();
        self.dispatch();
    }

    /// Sends queued batches into free request slots.
    fn dispatch(&mut self) {
        while let Some((batch, bytes)) = self.batcher.next_to_send() {
            metrics::histogram!("bulk.batch_docs").record(batch.len() as f64);
            metrics::histogram!("bulk.batch_bytes").record(batch.body().len() as f64);
            // Every log line of this batch's delivery (retries, refusals) carries its number and
            // the partition offset ranges it holds.
            self.batches_sent += 1;
            let number = self.batches_sent;
            self.slots.insert(number, bytes);
            let span = tracing::info_span!("bulk", batch = number, docs = batch.len(), origins = %batch.origins());
            let early = self.early_tx.clone();
            let delivery = self.sink.deliver_reporting(
                batch,
                Box::new(move |report| {
                    // The loop owns the receiver for as long as deliveries run.
                    let _ = early.send((number, report));
                }),
            );
            self.tasks.spawn(
                async move {
                    Done::Bulk {
                        result: delivery.await,
                        batch: number,
                    }
                }
                .instrument(span),
            );
        }
        metrics::gauge!("bulk.in_flight").set(self.batcher.in_flight() as f64);
    }

    /// Writes a dead letter in a task of its own (see [`DeadLetterQueue::deliver`]).
    fn dead_letter(&mut self, letter: DeadLetter, ticket: Ticket) {
        let dlq = self.dlq.clone();
        let wanted = self.source.wanted();
        self.tasks.spawn(async move {
            let delivered = dlq.deliver(letter, move || wanted(ticket)).await;
            Done::DeadLetter(ticket, delivered)
        });
    }

    fn on_finished(&mut self, done: Result<Done, tokio::task::JoinError>) -> anyhow::Result<()> {
        match done.map_err(|e| anyhow::anyhow!("an internal task failed: {e}"))? {
            Done::Bulk { result, batch } => {
                self.answers += 1;
                self.free_slot(batch);
                for (ticket, outcome) in result? {
                    self.on_outcome(ticket, outcome);
                }
                self.dispatch();
            }
            Done::DeadLetter(ticket, Delivered::Written(class)) => {
                if self.source.finish(ticket) {
                    self.stats.dead_lettered();
                }
                metrics::counter!("messages.dead_lettered", "class" => class.as_str()).increment(1);
            }
            Done::DeadLetter(_, Delivered::NotNeeded) => {}
            Done::DeadLetter(_, Delivered::Refused(reason)) => anyhow::bail!("{reason}"),
        }
        Ok(())
    }

    /// What a delivery reported while some of its items wait for a retry.
    fn on_early(&mut self, batch: u64, early: Early<Ticket>) {
        // A report with no outcome (a slot given back while every item waits), or only with
        // items dropped for a revoke, is no answer from the cluster.
        if early
            .outcomes
            .iter()
            .any(|(_, outcome)| *outcome != ItemOutcome::Revoked)
        {
            self.answers += 1;
        }
        if early.slot_freed {
            self.free_slot(batch);
        }
        for (ticket, outcome) in early.outcomes {
            self.on_outcome(ticket, outcome);
        }
        self.dispatch();
    }

    /// Gives back batch `number`'s request slot and memory, unless it was given back already.
    fn free_slot(&mut self, number: u64) {
        if let Some(bytes) = self.slots.remove(&number) {
            self.batcher.finished(bytes);
        }
    }

    fn on_outcome(&mut self, ticket: Ticket, outcome: ItemOutcome) {
        match outcome {
            ItemOutcome::DeadLetter(refusal) => {
                let letter = DeadLetter::refused(ticket.partition, ticket.offset, refusal);
                self.dead_letter(letter, ticket);
            }
            ItemOutcome::Revoked => {}
            outcome => {
                if self.source.finish(ticket) {
                    self.stats.finished(ticket.partition, &outcome);
                }
            }
        }
    }

    fn gauges(&self) -> Gauges {
        let (holding, paused) = self.flow.flags();
        Gauges {
            pending: self.source.pending(),
            holding,
            paused,
            bulk_in_flight: self.batcher.in_flight(),
            pauses: self.pauses,
        }
    }

    async fn drain(&mut self) -> anyhow::Result<()> {
        self.seal();
        let deadline = tokio::time::Instant::now() + self.settings.drain_timeout;
        while !self.tasks.is_empty() {
            let (early_rx, tasks) = (&mut self.early_rx, &mut self.tasks);
            let next = async {
                tokio::select! {
                    biased;
                    Some((batch, early)) = early_rx.recv() => Event::Early(batch, early),
                    done = tasks.join_next() => match done {
                        Some(done) => Event::Finished(done),
                        None => Event::Shutdown,
                    },
                }
            };
            match tokio::time::timeout_at(deadline, next).await {
                Ok(Event::Early(batch, early)) => self.on_early(batch, early),
                Ok(Event::Finished(done)) => self.on_finished(done)?,
                Ok(_) => break,
                Err(_) => {
                    tracing::warn!(
                        unfinished = self.source.pending(),
                        "drain timed out; unfinished messages stay uncommitted and are replayed by the next run"
                    );
                    break;
                }
            }
        }
        Ok(())
    }
}
