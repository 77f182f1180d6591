//! `--max-docs-per-sec`: one budget shared by every slice.
//!
//! Each page asks for its documents before it is written. The pacer hands out start times so
//! that the documents granted so far, divided by the rate, never run ahead of the clock: the
//! average rate over the run stays at or below the limit, whatever the number of slices.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A shared documents-per-second budget.
#[derive(Debug)]
pub struct Pacer {
    per_sec: Option<f64>,
    started: Instant,
    granted: Mutex<u64>,
}

/// How long after the start a page may go, when `granted` documents went before it at `per_sec`.
pub fn due(granted: u64, per_sec: f64) -> Duration {
    Duration::from_secs_f64(granted as f64 / per_sec)
}

impl Pacer {
    /// A pacer for `per_sec` documents per second; `None` or 0 means no limit.
    pub fn new(per_sec: Option<u64>) -> Self {
        Self {
            per_sec: per_sec.filter(|r| *r > 0).map(|r| r as f64),
            started: Instant::now(),
            granted: Mutex::new(0),
        }
    }

    /// Waits until `docs` more documents may be written.
    pub async fn admit(&self, docs: usize) {
        let Some(per_sec) = self.per_sec else {
            return;
        };
        let before = {
            let mut granted = self.granted.lock().unwrap_or_else(|e| e.into_inner());
            let before = *granted;
            *granted += docs as u64;
            before
        };
        tokio::time::sleep_until(self.started + due(before, per_sec)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_spaced_by_what_went_before() {
        assert_eq!(due(0, 500.0), Duration::ZERO);
        assert_eq!(due(1_000, 500.0), Duration::from_secs(2));
        assert_eq!(due(250, 1_000.0), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_shared_and_unlimited_means_no_wait() {
        let pacer = Pacer::new(Some(1_000));
        let start = tokio::time::Instant::now();
        pacer.admit(500).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the first page goes at once"
        );
        pacer.admit(500).await;
        assert!(start.elapsed() >= Duration::from_millis(500));
        pacer.admit(1).await;
        assert!(start.elapsed() >= Duration::from_secs(1));
        let free = Pacer::new(Some(0));
        let start = tokio::time::Instant::now();
        free.admit(1_000_000).await;
        free.admit(1_000_000).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
