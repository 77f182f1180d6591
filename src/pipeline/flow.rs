//! Reading under backpressure: when the replay loop takes messages, holds off, or pauses.
//!
//! The budget counts messages received but not yet final and the bytes of the batches holding
//! them. Past it, the loop first *holds*: it stops taking messages from librdkafka's queue, whose
//! prefetch is capped, and librdkafka stops fetching once that queue is full. Below half the
//! budget it reads on, and nothing was fetched twice. A hold lasts at most [`HOLD_BEFORE_PAUSE`],
//! so that rebalances are served: if the cluster answered a request during the hold and so freed
//! some of the budget (a slow cluster), the loop reads on until the budget is full again; if it
//! answered none (an Elasticsearch outage, say, where only dead letters free any budget), the loop pauses every assigned partition and polls again, so the
//! group membership and rebalances are served however long the outage lasts. Pausing is the
//! last resort because librdkafka discards a paused partition's prefetched messages, and the
//! broker must serve them again after the resume: before reading on was the rule, a cluster
//! taking longer than the hold to free half the budget had every prefetch fetched twice.

use std::time::Duration;

/// How long the loop may hold off reading under backpressure before it pauses the partitions
/// and polls again. Not polling delays rebalances and, past `max.poll.interval.ms`, would cost
/// the group membership, so the hold is also capped at half that interval.
pub const HOLD_BEFORE_PAUSE: Duration = Duration::from_secs(5);

/// How long a hold may last: [`HOLD_BEFORE_PAUSE`], or half of `max.poll.interval.ms` (in
/// milliseconds, as the consumer is configured) when that is shorter.
pub fn hold_limit(max_poll_interval_ms: Option<u64>) -> Duration {
    max_poll_interval_ms.map_or(HOLD_BEFORE_PAUSE, |ms| {
        HOLD_BEFORE_PAUSE.min(Duration::from_millis(ms / 2))
    })
}

/// How full the loop's budget is: messages received but not final, and the bytes of the batches
/// that hold them (open, queued and in flight). A revoke drops messages from the count while
/// their batches may still hold memory, so both are bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Messages received and not final.
    pub pending: usize,
    /// The most messages held.
    pub max_pending: usize,
    /// Bytes held by batches (open, queued and in flight).
    pub bytes: usize,
    /// The most bytes held.
    pub max_bytes: usize,
    /// How many times the cluster has answered so far (bulk requests finished, or item outcomes
    /// reported early): a hold reads on only if this grew while it lasted.
    pub answers: u64,
}

impl Load {
    /// At or past either bound.
    pub fn full(&self) -> bool {
        self.pending >= self.max_pending || self.bytes >= self.max_bytes
    }

    /// At or below half of both bounds.
    pub fn below_half(&self) -> bool {
        self.pending <= self.max_pending / 2 && self.bytes <= self.max_bytes / 2
    }
}

/// How the loop reads under backpressure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Taking messages as they come.
    Reading,
    /// The budget is full: messages stay in librdkafka's queue until `until`. `answers` is
    /// [`Load::answers`] when the hold began.
    Holding {
        until: tokio::time::Instant,
        answers: u64,
    },
    /// Held too long: the assignment is paused and the consumer polled for rebalances only.
    Paused,
}

impl Flow {
    /// The state after this one under `load`: hold when the budget is full, read on below half
    /// or when the hold runs out with some room the cluster made, pause when it runs out
    /// otherwise.
    pub fn next(self, load: Load, now: tokio::time::Instant, hold_limit: Duration) -> Flow {
        match self {
            Flow::Reading if load.full() => Flow::Holding {
                until: now + hold_limit,
                answers: load.answers,
            },
            Flow::Holding { .. } | Flow::Paused if load.below_half() => Flow::Reading,
            // The cluster answered during the hold and made room, if not yet half: reading on
            // polls the consumer as a pause would, without discarding the prefetch. Room made by
            // dead letters alone (an outage, with poison among the messages) is no answer.
            Flow::Holding { until, answers }
                if now >= until && !load.full() && load.answers > answers =>
            {
                Flow::Reading
            }
            Flow::Holding { until, .. } if now >= until => Flow::Paused,
            unchanged => unchanged,
        }
    }

    /// Whether the loop holds off reading, and whether the partitions are paused.
    pub fn flags(self) -> (bool, bool) {
        (matches!(self, Flow::Holding { .. }), self == Flow::Paused)
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
            answers: 0,
        }
    }

    /// `load` after the cluster has answered `answers` times.
    fn answered(answers: u64, pending: usize, bytes: usize) -> Load {
        Load {
            answers,
            ..load(pending, bytes)
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
        assert_eq!(
            held,
            Flow::Holding {
                until: now + HOLD,
                answers: 0
            }
        );
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
    fn a_hold_that_runs_out_while_the_cluster_frees_some_budget_reads_on_rather_than_pauses() {
        // A slow cluster: a batch finished during the hold, but the budget is not yet back to
        // half. Pausing would throw away librdkafka's prefetch, which the broker then serves
        // again; reading on polls the consumer just as well, and holds again once full.
        let now = tokio::time::Instant::now();
        let held = Flow::Reading.next(answered(3, MAX, 0), now, HOLD);
        let expired = now + HOLD;
        let read_on = held.next(answered(4, MAX - 1_000, 0), expired, HOLD);
        assert_eq!(read_on, Flow::Reading);
        let held_again = read_on.next(answered(4, MAX, 0), expired, HOLD);
        assert_eq!(
            held_again,
            Flow::Holding {
                until: expired + HOLD,
                answers: 4
            }
        );
        // Bytes count the same way: a hold whose bytes alone are still at the bound pauses.
        assert_eq!(
            held.next(answered(4, MAX - 1_000, MAX_BYTES), expired, HOLD),
            Flow::Paused
        );
    }

    #[test]
    fn a_hold_that_runs_out_with_room_made_by_dead_letters_alone_pauses() {
        // An outage with poison among the messages: the dead letters free a little budget, but
        // the cluster answered nothing during the hold, so reading on would only refill it.
        let now = tokio::time::Instant::now();
        let held = Flow::Reading.next(answered(7, MAX, 0), now, HOLD);
        let expired = now + HOLD;
        assert_eq!(
            held.next(answered(7, MAX - 20, 0), expired, HOLD),
            Flow::Paused
        );
        // An answer given before the hold began is no answer during it.
        let held_after_answer = Flow::Reading.next(answered(8, MAX, 0), now, HOLD);
        assert_eq!(
            held_after_answer.next(answered(8, MAX - 20, 0), expired, HOLD),
            Flow::Paused
        );
    }

    #[test]
    fn a_hold_never_outlasts_half_the_poll_interval() {
        assert_eq!(hold_limit(None), HOLD_BEFORE_PAUSE);
        assert_eq!(hold_limit(Some(60_000)), HOLD_BEFORE_PAUSE);
        assert_eq!(hold_limit(Some(4_000)), Duration::from_secs(2));
    }

    #[test]
    fn memory_held_by_batches_bounds_reading_even_when_few_messages_count_as_pending() {
        // After a revoke, the tracker no longer counts the revoked messages, but their batches
        // may still hold memory: the bytes alone must hold the loop, and keep it held.
        let now = tokio::time::Instant::now();
        let held = Flow::Reading.next(load(0, MAX_BYTES), now, HOLD);
        assert_eq!(
            held,
            Flow::Holding {
                until: now + HOLD,
                answers: 0
            }
        );
        assert_eq!(held.next(load(0, MAX_BYTES / 2 + 1), now, HOLD), held);
        assert_eq!(held.next(load(0, MAX_BYTES / 2), now, HOLD), Flow::Reading);
    }
}
