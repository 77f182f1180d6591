//! Backpressure: holding the reads, then pausing the partitions, when the work in flight
//! outgrows its budget ([`super::flow`] decides; this applies it to the consumer).

use std::time::Duration;

use super::flow::{Flow, Load};
use super::Pipeline;

impl Pipeline {
    /// Moves the flow to the state the budget asks for, pausing or resuming the partitions
    /// when that changes, and after every rebalance.
    pub(super) fn apply_backpressure(&mut self) {
        // After a rebalance the consumer's pause state of the new assignment is not known here:
        // librdkafka can keep a partition paused across a revoke and re-assign. So the wanted
        // state is applied to the whole assignment explicitly, paused or not. (Assuming "a new
        // assignment starts unpaused" stalled a member for good in the rebalance-storm test.)
        let rebalanced = self.source.take_rebalanced();
        if rebalanced {
            self.drop_revoked();
        }
        let pending = self.source.pending();
        let load = Load {
            pending,
            max_pending: self.max_pending,
            bytes: self.batcher.held_bytes(),
            max_bytes: self.max_bytes,
            answers: self.answers,
        };
        let now = tokio::time::Instant::now();
        let wanted = self.flow.next(load, now, self.hold_limit);
        let (was_paused, pause) = (self.flow == Flow::Paused, wanted == Flow::Paused);
        if pause == was_paused && !rebalanced {
            return self.set_flow(wanted, pending);
        }
        match self.source.set_paused(pause, rebalanced) {
            Ok(()) => self.set_flow(wanted, pending),
            Err(e) => {
                // Tried again on a later event; a failed pause holds on for another second
                // rather than spin on an expired hold.
                if pause {
                    let until = now + Duration::from_secs(1);
                    let answers = load.answers;
                    self.set_flow(Flow::Holding { until, answers }, pending);
                }
                tracing::warn!(error = %e, pause, "pausing or resuming partitions failed");
            }
        }
    }

    /// Drops the queued and open writes of partitions no longer assigned (revoked, or
    /// rewound): their next owner applies them, and sending them late could land them after
    /// newer writes of the same documents.
    pub(super) fn drop_revoked(&mut self) {
        let source = &self.source;
        let dropped = self.batcher.retain(|ticket| source.is_current(ticket));
        if dropped > 0 {
            tracing::info!(dropped, "dropped the queued writes of revoked partitions");
        }
    }

    pub(super) fn set_flow(&mut self, flow: Flow, pending: usize) {
        if flow == self.flow {
            return;
        }
        self.flow = flow;
        let (holding, paused) = flow.flags();
        metrics::gauge!("pipeline.holding").set(if holding { 1.0 } else { 0.0 });
        metrics::gauge!("pipeline.paused").set(if paused { 1.0 } else { 0.0 });
        if paused {
            self.pauses += 1;
            metrics::counter!("pipeline.pauses").increment(1);
        }
        tracing::debug!(pending, holding, paused, "backpressure");
    }
}
