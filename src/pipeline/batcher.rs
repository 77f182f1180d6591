//! Gathering prepared writes into bulk batches and handing them out to free request slots.
//!
//! A batch is sealed when it holds `--batch-max-docs` documents or `--batch-max-bytes` bytes, or
//! when its first document has waited `--linger-ms`. Sealed batches queue until one of the
//! `--max-in-flight` request slots is free. The batcher also counts the bytes its batches hold
//! (open, queued and in flight) for the loop's memory budget.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::sink::{Batch, Provenance, Tracked};
use crate::source::offsets::Ticket;
use crate::transform::Write;

/// The replay's writes are known to the sink by their offset-tracker ticket.
impl Tracked for Ticket {
    fn position(&self) -> (i32, i64) {
        (self.partition, self.offset)
    }
}

/// How batches are sized and how many are sent at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A batch is sealed at this many documents...
    pub max_docs: usize,
    /// ...or this many body bytes...
    pub max_bytes: usize,
    /// ...or once its first document waited this long.
    pub linger: Duration,
    /// Batches in flight at once.
    pub max_in_flight: usize,
}

/// The open batch, the sealed ones waiting for a slot, and the slots in use.
pub struct Batcher {
    limits: Limits,
    open: Batch<Ticket>,
    deadline: Option<Instant>,
    ready: VecDeque<Batch<Ticket>>,
    in_flight: usize,
    /// Bytes of the batches sealed and not yet finished (queued or in flight).
    sealed_bytes: usize,
    /// The body capacity a new batch starts with: the last sealed body's size and a quarter
    /// more, so a steady stream fills its batches without growing them, and a trickle of
    /// single documents does not allocate a full-sized body (7.5 MB by default) for each.
    body_hint: usize,
}

/// The smallest body a batch starts with.
const MIN_BODY: usize = 16 << 10;

impl Batcher {
    /// An empty batcher.
    pub fn new(limits: Limits) -> Self {
        Self {
            open: Batch::with_capacity(MIN_BODY, limits.max_docs),
            limits,
            deadline: None,
            ready: VecDeque::new(),
            in_flight: 0,
            sealed_bytes: 0,
            body_hint: MIN_BODY,
        }
    }

    /// Adds a write to the open batch, sealing it once full; true if it was sealed.
    pub fn push(&mut self, write: Write<'_>, provenance: Provenance<'_, Ticket>) -> bool {
        self.open.push(write, provenance);
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.limits.linger);
        }
        let full = self.open.len() >= self.limits.max_docs
            || self.open.body().len() >= self.limits.max_bytes;
        if full {
            self.seal();
        }
        full
    }

    /// When the open batch must be sealed, if it holds anything.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Queues the open batch for sending, if it holds anything.
    pub fn seal(&mut self) {
        self.deadline = None;
        if self.open.is_empty() {
            return;
        }
        let sealed_len = self.open.body().len();
        self.body_hint =
            (sealed_len + sealed_len / 4).clamp(MIN_BODY, self.limits.max_bytes.max(MIN_BODY));
        let fresh = Batch::with_capacity(self.body_hint, self.limits.max_docs);
        let sealed = std::mem::replace(&mut self.open, fresh);
        self.sealed_bytes += sealed.held_bytes();
        self.ready.push_back(sealed);
    }

    /// The next queued batch, with the bytes it holds, if a request slot is free; the slot is
    /// taken until [`Batcher::finished`] gives the bytes back.
    pub fn next_to_send(&mut self) -> Option<(Batch<Ticket>, usize)> {
        if self.in_flight >= self.limits.max_in_flight {
            return None;
        }
        let batch = self.ready.pop_front()?;
        self.in_flight += 1;
        let bytes = batch.held_bytes();
        Some((batch, bytes))
    }

    /// A batch handed out holding `bytes` is finished: its slot and memory are free.
    pub fn finished(&mut self, bytes: usize) {
        self.in_flight -= 1;
        self.sealed_bytes -= bytes;
    }

    /// Batches in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Bytes held by the open, queued and in-flight batches.
    pub fn held_bytes(&self) -> usize {
        self.sealed_bytes + self.open.held_bytes()
    }

    /// Drops the open and queued writes `keep` refuses (those of revoked partitions), and
    /// returns how many were dropped. Batches in flight are the sink's to drop.
    pub fn retain(&mut self, keep: impl Fn(Ticket) -> bool) -> usize {
        let mut dropped = self.open.retain(|item| keep(item.ticket));
        for batch in self.ready.iter_mut() {
            let before = batch.held_bytes();
            dropped += batch.retain(|item| keep(item.ticket));
            self.sealed_bytes -= before - batch.held_bytes();
        }
        self.ready.retain(|batch| !batch.is_empty());
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Op;

    fn limits(max_docs: usize, max_in_flight: usize) -> Limits {
        Limits {
            max_docs,
            max_bytes: 1 << 20,
            linger: Duration::from_millis(50),
            max_in_flight,
        }
    }

    fn push(batcher: &mut Batcher, partition: i32, offset: i64) {
        let id = format!("doc-{offset}");
        let write = Write {
            id: id.as_str().into(),
            routing: None,
            version: offset as u64,
            op: Op::Delete,
        };
        let provenance = Provenance {
            ticket: Ticket {
                partition,
                offset,
                epoch: 0,
            },
            key: None,
            payload: b"{}",
        };
        batcher.push(write, provenance);
    }

    #[tokio::test]
    async fn a_full_batch_is_sealed_and_waits_for_a_free_slot() {
        let mut batcher = Batcher::new(limits(2, 1));
        push(&mut batcher, 0, 0);
        assert!(
            batcher.deadline().is_some(),
            "the first write starts the linger"
        );
        assert!(batcher.next_to_send().is_none(), "nothing sealed yet");
        push(&mut batcher, 0, 1);
        assert!(batcher.deadline().is_none(), "the full batch was sealed");
        for offset in 2..4 {
            push(&mut batcher, 0, offset);
        }
        let (first, bytes) = batcher.next_to_send().unwrap();
        assert_eq!(first.len(), 2);
        assert!(batcher.next_to_send().is_none(), "the only slot is taken");
        assert_eq!(batcher.in_flight(), 1);
        let held = batcher.held_bytes();
        batcher.finished(bytes);
        assert_eq!(batcher.held_bytes(), held - bytes);
        assert_eq!(batcher.next_to_send().unwrap().0.len(), 2);
    }

    #[tokio::test]
    async fn a_lingering_batch_is_sealed_by_hand_and_an_empty_one_is_not_queued() {
        let mut batcher = Batcher::new(limits(100, 4));
        batcher.seal();
        assert!(batcher.next_to_send().is_none());
        push(&mut batcher, 0, 0);
        batcher.seal();
        assert_eq!(batcher.next_to_send().unwrap().0.len(), 1);
    }

    #[tokio::test]
    async fn revoked_writes_leave_the_open_and_queued_batches_and_their_bytes_are_freed() {
        let mut batcher = Batcher::new(limits(2, 1));
        for offset in 0..5 {
            push(&mut batcher, (offset % 2) as i32, offset);
        }
        let held = batcher.held_bytes();
        let dropped = batcher.retain(|ticket| ticket.partition == 0);
        assert_eq!(dropped, 2);
        assert!(batcher.held_bytes() < held);
        let mut sent = 0;
        while let Some((batch, bytes)) = batcher.next_to_send() {
            assert!(batch.items.iter().all(|i| i.ticket.partition == 0));
            sent += batch.len();
            batcher.finished(bytes);
        }
        batcher.seal();
        while let Some((batch, bytes)) = batcher.next_to_send() {
            sent += batch.len();
            batcher.finished(bytes);
        }
        assert_eq!(sent, 3);
        assert_eq!(batcher.held_bytes(), 0);
    }
}
