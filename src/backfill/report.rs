//! What a backfill reports: progress while it runs, the summary when it ends.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::checkpoint::{Checkpoint, SliceState};
use super::{lock, BackfillSettings, Copy};

/// How a backfill ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// Every slice is done.
    Complete,
    /// The checkpoint was already complete: nothing was read or written.
    AlreadyComplete,
    /// Stopped by a signal; `--resume` continues.
    Interrupted,
}

/// One slice in the final summary.
#[derive(Debug, Clone, Serialize)]
pub struct SliceSummary {
    /// The slice's range and totals over all runs.
    #[serde(flatten)]
    pub state: SliceState,
    /// Documents read by this run.
    pub read_this_run: u64,
}

/// What a backfill did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// How it ended.
    pub ending: Ending,
    /// The legacy index.
    pub from_index: String,
    /// The new index.
    pub to_index: String,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// The dead-letter file.
    pub dead_letter_file: PathBuf,
    /// Seconds this run took.
    pub elapsed_secs: f64,
    /// Documents read by this run.
    pub read_this_run: u64,
    /// Documents read per second by this run.
    pub docs_per_sec: f64,
    /// Documents in the legacy index when the backfill was planned.
    pub total_at_start: u64,
    /// The slices.
    pub slices: Vec<SliceSummary>,
}

impl Summary {
    /// Dead letters over all runs.
    pub fn dead_lettered(&self) -> u64 {
        self.slices.iter().map(|s| s.state.dead_lettered).sum()
    }
}

/// Logs and publishes progress every `progress_every`, and drives the progress bar.
pub(super) async fn report_progress(copy: Arc<Copy>, total: u64, already: u64) {
    let bar = crate::telemetry::progress_bar(total, "backfill", "documents");
    bar.set_position(already.min(total));
    let started = Instant::now();
    let index = copy.settings.to_index.clone();
    metrics::gauge!("backfill.docs.planned", "index" => index.clone()).set(total as f64);
    let mut last_log = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        ticker.tick().await;
        let read = copy.counters.read.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let rate = read as f64 / elapsed.max(1e-3);
        let (done, slices) = {
            let state = lock(&copy.state);
            (
                state.slices.iter().filter(|s| s.done).count(),
                state.slices.len(),
            )
        };
        bar.set_position((already + read).min(total));
        metrics::gauge!("backfill.docs.rate", "index" => index.clone()).set(rate);
        metrics::gauge!("backfill.elapsed_secs", "index" => index.clone()).set(elapsed);
        metrics::gauge!("backfill.slices.done", "index" => index.clone()).set(done as f64);
        metrics::gauge!("backfill.slices.total", "index" => index.clone()).set(slices as f64);
        if last_log.elapsed() >= copy.settings.progress_every {
            last_log = Instant::now();
            let left = total.saturating_sub(already + read);
            let eta_secs = (rate > 0.0).then(|| (left as f64 / rate).round());
            tracing::info!(
                read = already + read,
                total,
                docs_per_sec = rate.round(),
                ?eta_secs,
                slices_done = done,
                slices,
                "backfill progress"
            );
        }
    }
}

pub(super) fn summary(
    settings: &BackfillSettings,
    checkpoint: &Checkpoint,
    ending: Ending,
    started: Instant,
    read_per_slice: &[u64],
) -> Summary {
    let elapsed_secs = started.elapsed().as_secs_f64();
    let read_this_run: u64 = read_per_slice.iter().sum();
    Summary {
        ending,
        from_index: checkpoint.from_index.clone(),
        to_index: checkpoint.to_index.clone(),
        checkpoint: settings.checkpoint.clone(),
        dead_letter_file: settings.dead_letters.clone(),
        elapsed_secs,
        read_this_run,
        docs_per_sec: read_this_run as f64 / elapsed_secs.max(1e-3),
        total_at_start: checkpoint.total_at_start,
        slices: checkpoint
            .slices
            .iter()
            .map(|s| SliceSummary {
                state: s.clone(),
                read_this_run: read_per_slice.get(s.slice).copied().unwrap_or(0),
            })
            .collect(),
    }
}

/// The summary for people: one line overall, then a table of slices.
pub fn describe(summary: &Summary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let what = match summary.ending {
        Ending::AlreadyComplete => {
            let _ = writeln!(
                out,
                "backfill {} → {}: already complete according to {}; nothing to do",
                summary.from_index,
                summary.to_index,
                summary.checkpoint.display()
            );
            return out;
        }
        Ending::Complete => "complete",
        Ending::Interrupted => "interrupted (continue with --resume)",
    };
    let _ = writeln!(
        out,
        "backfill {} → {}: {what}; this run read {} documents in {:.1} s ({:.0}/s)",
        summary.from_index,
        summary.to_index,
        summary.read_this_run,
        summary.elapsed_secs,
        summary.docs_per_sec
    );
    let _ = writeln!(
        out,
        "{:>5}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  status",
        "slice", "read (run)", "read", "written", "kept newer", "dead", "restarts"
    );
    for s in &summary.slices {
        let st = &s.state;
        let _ = writeln!(
            out,
            "{:>5}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {:>8}  {}",
            st.slice,
            s.read_this_run,
            st.read,
            st.written,
            st.kept_newer,
            st.dead_lettered,
            st.restarts,
            if st.done { "done" } else { "unfinished" }
        );
    }
    let dead = summary.dead_lettered();
    if dead > 0 {
        let _ = writeln!(
            out,
            "{dead} documents dead-lettered to {} (reason and source on each line)",
            summary.dead_letter_file.display()
        );
    }
    out
}
