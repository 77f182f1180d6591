//! Which offsets are safe to commit.
//!
//! Commands of one partition finish out of order: bulk requests run concurrently, retries wait,
//! dead letters take their own path. Committing offset N tells Kafka "everything before N is
//! done", so a partition may only commit up to its first unfinished message. [`OffsetTracker`]
//! keeps, per partition, the messages received but not yet final, in offset order, and answers
//! that question. Offsets need not be contiguous integers (compaction and transaction markers
//! leave gaps); only the order in which messages arrive matters.
//!
//! Every assignment of a partition gets a fresh epoch. A completion that carries an older epoch
//! belongs to work started before the partition was revoked; it is ignored, because the
//! partition's new owner replays that message anyway.

use std::collections::{BTreeMap, VecDeque};

/// Identifies one tracked message: partition, offset and the assignment epoch it arrived in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket {
    /// Kafka partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// The assignment epoch the message was received in.
    pub epoch: u64,
}

#[derive(Debug, Default)]
struct PartitionState {
    epoch: u64,
    /// Received, in offset order, with whether each is final.
    window: VecDeque<(i64, bool)>,
    /// One past the newest offset received.
    next: Option<i64>,
    /// The last commit point handed to Kafka, not yet known to have succeeded.
    offered: Option<i64>,
    /// The last offset Kafka confirmed as committed.
    committed: Option<i64>,
}

impl PartitionState {
    fn commit_point(&self) -> Option<i64> {
        match self.window.front() {
            Some((offset, _)) => Some(*offset),
            None => self.next,
        }
    }
}

/// Tracks in-flight messages per partition and computes commit points.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: BTreeMap<i32, PartitionState>,
    next_epoch: u64,
    pending: usize,
    rewinds: u64,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking a newly assigned partition. Replaces any earlier state for it.
    pub fn assign(&mut self, partition: i32) {
        self.next_epoch += 1;
        let old = self.partitions.insert(
            partition,
            PartitionState {
                epoch: self.next_epoch,
                ..PartitionState::default()
            },
        );
        if let Some(old) = old {
            self.pending -= old.window.iter().filter(|(_, done)| !done).count();
        }
    }

    /// Stops tracking a revoked partition and returns the offset it may still commit, if it moved.
    pub fn revoke(&mut self, partition: i32) -> Option<i64> {
        let state = self.partitions.remove(&partition)?;
        self.pending -= state.window.iter().filter(|(_, done)| !done).count();
        state
            .commit_point()
            .filter(|point| Some(*point) != state.committed)
    }

    /// Whether the partition is currently assigned.
    pub fn is_assigned(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// The partitions currently assigned.
    pub fn assigned(&self) -> impl Iterator<Item = i32> + '_ {
        self.partitions.keys().copied()
    }

    /// Whether `ticket` belongs to its partition's current assignment (and rewind).
    pub fn is_current(&self, ticket: Ticket) -> bool {
        self.partitions
            .get(&ticket.partition)
            .is_some_and(|s| s.epoch == ticket.epoch)
    }

    /// Records a received message. Returns `None` if its partition is not assigned.
    ///
    /// An offset below one already received means the partition's log was rewound under the
    /// consumer (an offset reset, or a log truncated by an unclean leader election): the messages
    /// from there on may differ from those received before, so they are all processed again, in
    /// a fresh epoch, and the work in flight for the old ones no longer counts.
    pub fn track(&mut self, partition: i32, offset: i64) -> Option<Ticket> {
        let state = self.partitions.get_mut(&partition)?;
        if let Some(next) = state.next.filter(|next| offset < *next) {
            self.next_epoch += 1;
            state.epoch = self.next_epoch;
            self.pending -= state.window.iter().filter(|(_, done)| !done).count();
            state.window.clear();
            self.rewinds += 1;
            metrics::counter!("offsets.rewinds").increment(1);
            tracing::warn!(
                partition,
                offset,
                expected = next,
                "the partition went back from offset {next} to {offset} within one assignment (an offset reset, or a log truncated after an unclean leader election); processing everything from {offset} again"
            );
        }
        state.window.push_back((offset, false));
        state.next = Some(offset + 1);
        self.pending += 1;
        Some(Ticket {
            partition,
            offset,
            epoch: state.epoch,
        })
    }

    /// Marks a message final (indexed, already applied or dead-lettered). Returns false for a
    /// ticket from an earlier assignment, or one already finished.
    pub fn finish(&mut self, ticket: Ticket) -> bool {
        let Some(state) = self.partitions.get_mut(&ticket.partition) else {
            return false;
        };
        if state.epoch != ticket.epoch {
            return false;
        }
        let Ok(index) = state
            .window
            .binary_search_by_key(&ticket.offset, |(offset, _)| *offset)
        else {
            return false;
        };
        if std::mem::replace(&mut state.window[index].1, true) {
            return false;
        }
        self.pending -= 1;
        while state.window.front().is_some_and(|(_, done)| *done) {
            state.window.pop_front();
        }
        true
    }

    /// Messages received but not yet final, over all partitions.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Offsets to commit now: for each partition whose commit point moved since the last call,
    /// the offset of its first unfinished message (or one past its newest, if all are final).
    /// The caller commits them and reports each result with [`Self::commit_result`]; a point
    /// whose commit failed is offered again by the next call.
    pub fn take_commits(&mut self) -> Vec<(i32, i64)> {
        let mut commits = Vec::new();
        for (partition, state) in &mut self.partitions {
            if let Some(point) = state.commit_point() {
                if state.offered != Some(point) && state.committed != Some(point) {
                    state.offered = Some(point);
                    commits.push((*partition, point));
                }
            }
        }
        commits
    }

    /// Records what Kafka answered to the commit of `offset` on `partition`.
    pub fn commit_result(&mut self, partition: i32, offset: i64, succeeded: bool) {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return;
        };
        if succeeded {
            state.committed = state.committed.max(Some(offset));
        } else if state.offered == Some(offset) {
            state.offered = None;
        }
    }

    /// How many times a partition went back within an assignment (see [`Self::track`]).
    pub fn rewinds(&self) -> u64 {
        self.rewinds
    }

    /// Every assigned partition's commit point now, offered before or not (for the final,
    /// synchronous commit of a run).
    pub fn commit_points(&self) -> Vec<(i32, i64)> {
        self.partitions
            .iter()
            .filter_map(|(p, s)| s.commit_point().map(|point| (*p, point)))
            .collect()
    }

    /// The last confirmed commit per assigned partition.
    pub fn committed(&self) -> impl Iterator<Item = (i32, Option<i64>)> + '_ {
        self.partitions.iter().map(|(p, s)| (*p, s.committed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_stop_at_the_first_unfinished_message() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let tickets: Vec<_> = (10..15).map(|o| t.track(0, o).unwrap()).collect();
        t.finish(tickets[0]);
        t.finish(tickets[2]);
        assert_eq!(t.take_commits(), [(0, 11)]);
        t.finish(tickets[1]);
        assert_eq!(t.take_commits(), [(0, 13)]);
        assert_eq!(t.take_commits(), []);
        t.finish(tickets[3]);
        t.finish(tickets[4]);
        assert_eq!(t.take_commits(), [(0, 15)]);
        assert_eq!(t.pending(), 0);
    }

    #[test]
    fn offset_gaps_do_not_block_commits() {
        let mut t = OffsetTracker::new();
        t.assign(1);
        let a = t.track(1, 3).unwrap();
        let b = t.track(1, 9).unwrap();
        t.finish(a);
        t.finish(b);
        assert_eq!(t.take_commits(), [(1, 10)]);
    }

    #[test]
    fn completions_from_a_previous_assignment_are_ignored() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let old = t.track(0, 5).unwrap();
        assert_eq!(t.revoke(0), Some(5));
        t.assign(0);
        let new = t.track(0, 5).unwrap();
        assert!(!t.finish(old));
        assert_eq!(t.pending(), 1);
        assert!(t.finish(new));
        assert_eq!(t.take_commits(), [(0, 6)]);
    }

    #[test]
    fn unassigned_partitions_are_not_tracked() {
        let mut t = OffsetTracker::new();
        assert!(t.track(0, 1).is_none());
        t.assign(0);
        assert!(t.track(0, 4).is_some());
    }

    #[test]
    fn a_rewind_within_an_assignment_is_processed_again_not_skipped() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let old: Vec<_> = (10..13).map(|o| t.track(0, o).unwrap()).collect();
        t.finish(old[0]);
        // The log went back to 5 (an offset reset, a truncation): 5.. are new work.
        let again = t
            .track(0, 5)
            .expect("a rewound offset is tracked, not dropped");
        assert_eq!(t.rewinds(), 1);
        assert_eq!(
            t.pending(),
            1,
            "the old window's unfinished work no longer counts"
        );
        assert!(!t.is_current(old[1]));
        assert!(!t.finish(old[1]), "the old epoch's completions are ignored");
        assert_eq!(
            t.take_commits(),
            [(0, 5)],
            "nothing past the rewound offset is final"
        );
        t.finish(again);
        assert_eq!(t.take_commits(), [(0, 6)]);
    }

    #[test]
    fn a_failed_commit_is_offered_again_and_only_a_confirmed_one_counts() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let a = t.track(0, 0).unwrap();
        t.finish(a);
        assert_eq!(t.take_commits(), [(0, 1)]);
        assert_eq!(
            t.take_commits(),
            [],
            "offered once while its answer is awaited"
        );
        assert_eq!(t.committed().next(), Some((0, None)));
        t.commit_result(0, 1, false);
        assert_eq!(t.take_commits(), [(0, 1)], "a failed commit is retried");
        t.commit_result(0, 1, true);
        assert_eq!(t.committed().next(), Some((0, Some(1))));
        assert_eq!(t.take_commits(), []);
    }

    #[test]
    fn revoke_reports_only_an_offset_that_moved() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let a = t.track(0, 0).unwrap();
        t.finish(a);
        assert_eq!(t.take_commits(), [(0, 1)]);
        t.commit_result(0, 1, true);
        assert_eq!(t.revoke(0), None);
    }

    proptest! {
        /// Whatever order messages finish in, a commit never passes an unfinished message, and
        /// once all finish the commit point is one past the last.
        #[test]
        fn commits_never_pass_an_unfinished_message(
            offsets in proptest::collection::btree_set(0i64..10_000, 1..200),
            seed in any::<u64>(),
        ) {
            let mut t = OffsetTracker::new();
            t.assign(0);
            let mut tickets: Vec<_> = offsets.iter().map(|o| t.track(0, *o).unwrap()).collect();
            let mut rng = seed;
            for i in (1..tickets.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                tickets.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let mut finished = std::collections::BTreeSet::new();
            for ticket in &tickets {
                prop_assert!(t.finish(*ticket));
                finished.insert(ticket.offset);
                for (partition, point) in t.take_commits() {
                    t.commit_result(partition, point, true);
                    let unfinished_before = offsets.iter().any(|o| *o < point && !finished.contains(o));
                    prop_assert!(!unfinished_before, "committed {} past an unfinished message", point);
                }
            }
            prop_assert_eq!(t.pending(), 0);
            let last = *offsets.iter().next_back().unwrap();
            prop_assert_eq!(t.committed().next(), Some((0, Some(last + 1))));
        }
    }
}
