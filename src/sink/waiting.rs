//! Documents whose older write could still land after a newer one.
//!
//! A write sent again must never land after a newer write of the same document: once the newer
//! one is a delete whose tombstone expired (`index.gc_deletes`), the old write would bring the
//! document back. Two records let a delivery drop such a write before it is sent again:
//! - while a write waits for its retry, every applied write of the same `_id` is noted;
//! - every delivery takes a turn number when it is created (in the order batches are sealed),
//!   and a delete applied while an older delivery is still in flight is noted with its turn,
//!   so the older delivery learns of it even when its own first answer came after the delete.
//!   The note is forgotten once every older delivery has finished.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The records of one sink, shared by its deliveries.
#[derive(Default)]
pub(super) struct Waiting {
    ids: Mutex<HashMap<Vec<u8>, Watch>>,
    count: AtomicUsize,
    turns: Mutex<Turns>,
    /// How many deletes are noted in `turns`; while none is, nothing needs to be looked up.
    deletes: AtomicUsize,
}

#[derive(Default)]
struct Watch {
    waiters: usize,
    newest_applied: Option<u64>,
}

#[derive(Default)]
struct Turns {
    next: u64,
    in_flight: BTreeSet<u64>,
    /// Quoted `_id` → (turn of the delivery that applied the delete, its version).
    deletes: HashMap<Vec<u8>, (u64, u64)>,
}

/// A delivery's place in the order batches were sealed; ends (and lets notes go) when dropped.
pub(super) struct Turn {
    waiting: Arc<Waiting>,
    pub(super) number: u64,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut turns = lock(&self.waiting.turns);
        turns.in_flight.remove(&self.number);
        if turns.deletes.is_empty() {
            return;
        }
        // A note matters only to deliveries older than the one that wrote it.
        match turns.in_flight.first().copied() {
            Some(oldest) => turns.deletes.retain(|_, (turn, _)| *turn > oldest),
            None => turns.deletes.clear(),
        }
        self.waiting
            .deletes
            .store(turns.deletes.len(), Ordering::SeqCst);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Waiting {
    /// The next delivery's turn.
    pub(super) fn begin(self: &Arc<Self>) -> Turn {
        let mut turns = lock(&self.turns);
        let number = turns.next;
        turns.next += 1;
        turns.in_flight.insert(number);
        Turn {
            waiting: Arc::clone(self),
            number,
        }
    }

    pub(super) fn watch(&self, id: &[u8]) {
        lock(&self.ids).entry(id.to_vec()).or_default().waiters += 1;
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn unwatch(&self, id: &[u8]) {
        let mut ids = lock(&self.ids);
        if let Some(watch) = ids.get_mut(id) {
            watch.waiters -= 1;
            if watch.waiters == 0 {
                ids.remove(id);
            }
            self.count.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Whether any write waits; while none does, applied writes need not be noted.
    pub(super) fn any(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    /// Whether any delete is noted; while none is, unwatched writes need not be looked up.
    pub(super) fn any_deletes(&self) -> bool {
        self.deletes.load(Ordering::SeqCst) > 0
    }

    /// Notes an applied write.
    pub(super) fn applied(&self, id: &[u8], version: u64) {
        if let Some(watch) = lock(&self.ids).get_mut(id) {
            watch.newest_applied = watch.newest_applied.max(Some(version));
        }
    }

    /// Notes a delete applied by the delivery of turn `turn`, if an older delivery is in flight.
    pub(super) fn delete_applied(&self, turn: u64, id: &[u8], version: u64) {
        let mut turns = lock(&self.turns);
        if turns.in_flight.first().is_none_or(|oldest| *oldest >= turn) {
            return;
        }
        let noted = turns.deletes.entry(id.to_vec()).or_insert((turn, version));
        *noted = (noted.0.max(turn), noted.1.max(version));
        self.deletes.store(turns.deletes.len(), Ordering::SeqCst);
    }

    /// Whether a newer write of the document overtook this one (of the delivery of turn `turn`).
    pub(super) fn overtaken(&self, id: &[u8], version: u64, turn: u64) -> bool {
        let watched = lock(&self.ids)
            .get(id)
            .and_then(|w| w.newest_applied)
            .is_some_and(|newest| newest > version);
        watched
            || (self.any_deletes()
                && lock(&self.turns)
                    .deletes
                    .get(id)
                    .is_some_and(|(by, deleted)| *by > turn && *deleted > version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_applied_by_a_newer_delivery_overtakes_an_older_one_until_it_ends() {
        let waiting = Arc::new(Waiting::default());
        let older = waiting.begin();
        let newer = waiting.begin();
        waiting.delete_applied(newer.number, b"\"x\"", 700);
        assert!(waiting.overtaken(b"\"x\"", 150, older.number));
        assert!(
            !waiting.overtaken(b"\"x\"", 800, older.number),
            "a newer write stays"
        );
        assert!(!waiting.overtaken(b"\"y\"", 150, older.number));
        drop(newer);
        assert!(
            waiting.any_deletes(),
            "the older delivery still needs the note"
        );
        drop(older);
        assert!(!waiting.any_deletes());
    }

    #[test]
    fn a_delete_with_no_older_delivery_in_flight_is_not_noted() {
        let waiting = Arc::new(Waiting::default());
        let only = waiting.begin();
        waiting.delete_applied(only.number, b"\"x\"", 700);
        assert!(!waiting.any_deletes());
        let later = waiting.begin();
        assert!(!waiting.overtaken(b"\"x\"", 900, later.number));
    }
}
