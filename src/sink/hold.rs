//! Why the sink holds writes, and since when: one record shared by every delivery in flight,
//! read by `/readyz` and `/status`, with the `sink.holding` gauge and a warning that repeats
//! every minute while the hold lasts (see the decision table in [`super::retry`]).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a hold that goes on is logged again.
const HOLD_LOG_EVERY: Duration = Duration::from_secs(60);

/// Why writes are held, and since when.
#[derive(Default)]
pub(super) struct Hold(Mutex<HoldState>);

#[derive(Default)]
struct HoldState {
    reason: Option<String>,
    since: Option<Instant>,
    logged: Option<Instant>,
}

impl Hold {
    fn lock(&self) -> std::sync::MutexGuard<'_, HoldState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn hold(&self, index: &str, reason: &str) {
        let mut state = self.lock();
        let since = *state.since.get_or_insert_with(Instant::now);
        if state.reason.is_none() {
            metrics::gauge!("sink.holding").set(1.0);
        }
        state.reason = Some(reason.to_owned());
        if state.logged.is_none_or(|at| at.elapsed() >= HOLD_LOG_EVERY) {
            state.logged = Some(Instant::now());
            tracing::warn!(
                %index, held_secs = since.elapsed().as_secs(), %reason,
                "Elasticsearch refuses writes for a reason of the cluster, not of the documents; holding them (nothing is dead-lettered or committed past them) and retrying until it accepts them"
            );
        }
    }

    pub(super) fn lift(&self, index: &str) {
        let mut state = self.lock();
        if state.reason.take().is_some() {
            metrics::gauge!("sink.holding").set(0.0);
            let since = state.since.take().map_or(0, |s| s.elapsed().as_secs());
            if state.logged.is_some_and(|at| at.elapsed() < HOLD_LOG_EVERY) {
                tracing::info!(%index, held_secs = since, "Elasticsearch accepts writes again");
            }
        }
    }

    pub(super) fn reason(&self) -> Option<String> {
        let state = self.lock();
        let since = state.since?;
        state
            .reason
            .as_ref()
            .map(|r| format!("{r} (for {} s)", since.elapsed().as_secs()))
    }
}
