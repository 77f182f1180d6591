//! What a replay did: the run's summary, the per-partition metrics and the progress line.

use std::collections::HashMap;
use std::time::Instant;

use crate::sink::{ItemOutcome, OpKind};

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

/// One partition's counters, and the counts not yet handed to them.
///
/// A statsd counter formats and queues a line on every increment, so the loop counts messages
/// in plain integers and hands the sums to the counters once per commit tick
/// ([`RunStats::flush`]): one line per counter and tick instead of one per message.
struct PartitionMetrics {
    consumed: metrics::Counter,
    indexed: metrics::Counter,
    deleted: metrics::Counter,
    already_applied: metrics::Counter,
    unflushed: Unflushed,
}

#[derive(Default)]
struct Unflushed {
    consumed: u64,
    indexed: u64,
    deleted: u64,
    already_applied: u64,
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
            unflushed: Unflushed::default(),
        }
    }

    fn flush(&mut self) {
        let counts = std::mem::take(&mut self.unflushed);
        for (counter, count) in [
            (&self.consumed, counts.consumed),
            (&self.indexed, counts.indexed),
            (&self.deleted, counts.deleted),
            (&self.already_applied, counts.already_applied),
        ] {
            if count > 0 {
                counter.increment(count);
            }
        }
    }
}

/// The loop's counters: the summary, and the same counts per partition as metrics.
pub struct RunStats {
    topic: String,
    summary: Summary,
    metrics: HashMap<i32, PartitionMetrics>,
    started: Instant,
    /// When the last progress line was logged, and the messages consumed by then.
    last_progress: (Instant, u64),
}

/// The loop's state shown beside the counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Messages received and not final.
    pub pending: usize,
    /// Whether the loop holds off reading.
    pub holding: bool,
    /// Whether the partitions are paused.
    pub paused: bool,
    /// Bulk requests in flight.
    pub bulk_in_flight: usize,
    /// How many times the partitions were paused.
    pub pauses: u64,
}

impl RunStats {
    /// Counters for a replay of `topic`, starting now.
    pub fn new(topic: &str) -> Self {
        let now = Instant::now();
        Self {
            topic: topic.to_owned(),
            summary: Summary::default(),
            metrics: HashMap::new(),
            started: now,
            last_progress: (now, 0),
        }
    }

    fn partition(&mut self, partition: i32) -> &mut Unflushed {
        let topic = &self.topic;
        let entry = self
            .metrics
            .entry(partition)
            .or_insert_with(|| PartitionMetrics::new(topic, partition));
        &mut entry.unflushed
    }

    /// Hands the counts since the last flush to the metrics (once per commit tick, and at the
    /// end of the run).
    pub fn flush(&mut self) {
        for partition in self.metrics.values_mut() {
            partition.flush();
        }
    }

    /// A message was received from `partition`.
    pub fn consumed(&mut self, partition: i32) {
        self.summary.consumed += 1;
        self.partition(partition).consumed += 1;
    }

    /// A write of `partition` became final with `outcome` (dead letters count once written).
    pub fn finished(&mut self, partition: i32, outcome: &ItemOutcome) {
        match outcome {
            ItemOutcome::Applied(OpKind::Index) => {
                self.summary.indexed += 1;
                self.partition(partition).indexed += 1;
            }
            ItemOutcome::Applied(OpKind::Delete) => {
                self.summary.deleted += 1;
                self.partition(partition).deleted += 1;
            }
            ItemOutcome::AlreadyApplied => {
                self.summary.already_applied += 1;
                self.partition(partition).already_applied += 1;
            }
            ItemOutcome::DeadLetter(_) | ItemOutcome::Revoked => {}
        }
    }

    /// A dead letter was written.
    pub fn dead_lettered(&mut self) {
        self.summary.dead_lettered += 1;
    }

    /// The summary, with `unfinished` messages left when the run ends.
    pub fn summary(&self, unfinished: u64) -> Summary {
        Summary {
            unfinished,
            ..self.summary.clone()
        }
    }

    /// The counters and gauges as `/status` shows them.
    pub fn counters(&self, gauges: Gauges) -> serde_json::Value {
        let s = &self.summary;
        serde_json::json!({
            "consumed": s.consumed,
            "indexed": s.indexed,
            "deleted": s.deleted,
            "already_applied": s.already_applied,
            "dead_lettered": s.dead_lettered,
            "pending": gauges.pending,
            "holding": gauges.holding,
            "paused": gauges.paused,
            "bulk_in_flight": gauges.bulk_in_flight,
            "pauses": gauges.pauses,
        })
    }

    /// Logs the counters, the rate since the previous progress line and the mean rate since the
    /// start (which, unlike the former, keeps falling once the backlog is done).
    pub fn log_progress(&mut self, gauges: Gauges) {
        let now = Instant::now();
        let (since, consumed_then) =
            std::mem::replace(&mut self.last_progress, (now, self.summary.consumed));
        let s = &self.summary;
        let (recent, mean) = rates(
            s.consumed,
            consumed_then,
            now.duration_since(since).as_secs_f64(),
            now.duration_since(self.started).as_secs_f64(),
        );
        tracing::info!(
            consumed = s.consumed,
            indexed = s.indexed,
            deleted = s.deleted,
            already_applied = s.already_applied,
            dead_lettered = s.dead_lettered,
            pending = gauges.pending,
            rate_per_sec = recent.round(),
            mean_rate_per_sec = mean.round(),
            holding = gauges.holding,
            paused = gauges.paused,
            "progress"
        );
    }
}

/// Messages per second since the last progress line, and since the start.
fn rates(
    consumed: u64,
    consumed_then: u64,
    since_last_secs: f64,
    since_start_secs: f64,
) -> (f64, f64) {
    (
        (consumed - consumed_then) as f64 / since_last_secs.max(1e-3),
        consumed as f64 / since_start_secs.max(1e-3),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Original;

    #[test]
    fn outcomes_count_by_kind_and_dead_letters_only_once_written() {
        let mut stats = RunStats::new("commands");
        for partition in [0, 1, 1] {
            stats.consumed(partition);
        }
        stats.finished(0, &ItemOutcome::Applied(OpKind::Index));
        stats.finished(1, &ItemOutcome::Applied(OpKind::Delete));
        stats.finished(1, &ItemOutcome::AlreadyApplied);
        stats.finished(1, &ItemOutcome::Revoked);
        let refused = ItemOutcome::DeadLetter(crate::sink::Refusal {
            class: crate::dlq::ErrorClass::Mapping,
            reason: String::new(),
            es_type: None,
            attempts: 1,
            original: Original::default(),
        });
        stats.finished(1, &refused);
        assert_eq!(stats.summary(0).dead_lettered, 0);
        stats.dead_lettered();
        assert_eq!(
            stats.summary(2),
            Summary {
                consumed: 3,
                indexed: 1,
                deleted: 1,
                already_applied: 1,
                dead_lettered: 1,
                unfinished: 2,
            }
        );
    }

    #[test]
    fn the_recent_rate_falls_to_zero_when_idle_while_the_mean_stays() {
        assert_eq!(rates(1_000, 0, 10.0, 10.0), (100.0, 100.0));
        let (recent, mean) = rates(1_000, 1_000, 10.0, 20.0);
        assert_eq!((recent, mean), (0.0, 50.0));
    }
}
