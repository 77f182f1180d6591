//! Documents with a write waiting to be retried.
//!
//! A write waiting for its retry must never land after a newer write of the same document: once
//! the newer one is a delete whose tombstone expired (`index.gc_deletes`), the old write would
//! bring the document back. While a write waits, every applied write of the same `_id` is noted
//! here, and the delivery drops a waiting write that a newer one overtook.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Documents with a write waiting to be retried, and the newest version applied for each since.
#[derive(Default)]
pub(super) struct Waiting {
    ids: Mutex<HashMap<Vec<u8>, Watch>>,
    count: AtomicUsize,
}

#[derive(Default)]
struct Watch {
    waiters: usize,
    newest_applied: Option<u64>,
}

impl Waiting {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Watch>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn watch(&self, id: &[u8]) {
        self.lock().entry(id.to_vec()).or_default().waiters += 1;
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn unwatch(&self, id: &[u8]) {
        let mut ids = self.lock();
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

    /// Notes an applied write.
    pub(super) fn applied(&self, id: &[u8], version: u64) {
        if let Some(watch) = self.lock().get_mut(id) {
            watch.newest_applied = watch.newest_applied.max(Some(version));
        }
    }

    pub(super) fn overtaken(&self, id: &[u8], version: u64) -> bool {
        self.lock()
            .get(id)
            .and_then(|w| w.newest_applied)
            .is_some_and(|newest| newest > version)
    }
}
