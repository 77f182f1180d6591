//! `backfill`: copy the history that Kafka no longer holds from the legacy cluster into the new
//! one, beside the live replay.
//!
//! The legacy index is read in the cluster's own slices, a page at a time, by up to
//! `concurrency` workers: a point in time with `search_after` on `_shard_doc` where the cluster
//! has it, sliced `scroll` elsewhere ([`crate::es::read`]); never sorted on `_id`. Every page
//! goes through the same legacy → new transform as `verify` ([`legacy::to_new`]) and the same
//! bulk sink as the live replay, with its per-item classification and retries. A document that
//! cannot be transformed, or that the new mapping refuses, is written to the dead-letter file
//! with its reason, and the copy goes on. The next page is read while the current one is
//! written.
//!
//! # Versions, and why the live replay always wins
//! Under the default strategy, [`VersionStrategy::Yield`], a backfilled document is indexed with
//! external version 0, the lowest there is. The live replay writes versions ≥ 0 (offsets,
//! command versions or timestamps), so:
//! - a backfilled document never replaces anything the live replay wrote: Elasticsearch answers
//!   409 and the backfill counts it as "kept newer";
//! - the live replay is never blocked by a backfilled document: its next write for the id
//!   carries a higher version and replaces it (an equal version 0 can only be the id's first
//!   command, of which the legacy copy is no older);
//! - a delete by the live replay leaves a tombstone with its version, which refuses the
//!   version-0 copy as long as the tombstone lives. Elasticsearch keeps tombstones for
//!   `index.gc_deletes` (60 s by default); the backfill raises it on the target for its
//!   duration (`--gc-deletes`, 12 h by default) and puts it back afterwards.
//!
//! [`VersionStrategy::LegacyVersion`] uses the legacy document's `_version` instead. It is right
//! only when the legacy indexer writes the same external versions as the live replay's
//! `--version-source`; then a backfilled copy that is newer than what the live replay has reached
//! so far stays until the replay catches up.
//!
//! Progress is checkpointed per slice after every page ([`checkpoint`]); see docs/backfill.md for the argument in full and what `verify` shows where it cannot hold.

pub mod checkpoint;
mod copy;
pub mod pace;
mod plan;
mod report;
mod target;

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use self::checkpoint::Checkpoint;
use self::pace::Pacer;
use crate::cutover::alias;
use crate::es::cluster::{self, Role};
use crate::es::read::Snapshot;
use crate::es::{self};
use crate::sink::{BulkSink, RetryPolicy};

/// How backfilled documents are versioned against the live replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VersionStrategy {
    /// External version 0: the backfill never replaces what the live replay wrote.
    #[default]
    Yield,
    /// The legacy document's `_version`, as an external version.
    LegacyVersion,
}

impl VersionStrategy {
    /// The accepted spellings.
    pub const NAMES: &'static str = "yield, legacy-version";
}

impl FromStr for VersionStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "yield" => Ok(Self::Yield),
            "legacy-version" => Ok(Self::LegacyVersion),
            other => Err(format!(
                "`{other}` is not a version strategy; accepted: {}",
                Self::NAMES
            )),
        }
    }
}

impl fmt::Display for VersionStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Yield => "yield",
            Self::LegacyVersion => "legacy-version",
        })
    }
}

/// Everything a backfill needs.
#[derive(Debug, Clone)]
pub struct BackfillSettings {
    /// Credentials and TLS settings of both clusters.
    pub security: crate::es::Security,
    /// The legacy cluster.
    pub from_url: String,
    /// The legacy index or alias.
    pub from_index: String,
    /// The new cluster.
    pub to_url: String,
    /// The new index or write alias.
    pub to_index: String,
    /// Slices to read the legacy index in.
    pub slices: usize,
    /// How long the legacy index's point in time outlives the last read.
    pub keep_alive: String,
    /// Slices copied at the same time.
    pub concurrency: usize,
    /// Documents per page, which is also the bulk size.
    pub page_size: usize,
    /// Documents per second over all slices; `None` for no limit.
    pub max_docs_per_sec: Option<u64>,
    /// How backfilled documents are versioned.
    pub versions: VersionStrategy,
    /// The checkpoint file.
    pub checkpoint: PathBuf,
    /// Continue the backfill recorded in the checkpoint.
    pub resume: bool,
    /// Where dead letters are appended, one JSON object per line.
    pub dead_letters: PathBuf,
    /// Put the target into bulk-load settings for the copy.
    pub bulk_load: bool,
    /// `index.gc_deletes` for the target during the copy; `None` leaves it alone.
    pub gc_deletes: Option<String>,
    /// Bulk retries.
    pub retry: RetryPolicy,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// How often progress is logged.
    pub progress_every: Duration,
}

use copy::{copy_all, InPage};
use plan::{plan, resume};
use report::summary;
use target::{prepare_target, restore_target};

pub use copy::DeadLetterLine;
pub use report::{describe, Ending, SliceSummary, Summary};

/// Counters of this run, shared by the workers and the progress reporter.
#[derive(Debug, Default)]
struct RunCounters {
    read: AtomicU64,
    per_slice: Mutex<Vec<u64>>,
}

/// What the workers share.
struct Copy {
    settings: BackfillSettings,
    snapshot: Snapshot,
    sink: BulkSink<InPage>,
    state: Mutex<Checkpoint>,
    dead_letters: Mutex<BufWriter<File>>,
    pacer: Pacer,
    counters: RunCounters,
    stop: watch::Receiver<bool>,
}

/// Runs a backfill until it is complete or `stop` turns true.
pub async fn run(
    settings: BackfillSettings,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let legacy = es::secure_client(
        &settings.from_url,
        &settings.security.legacy,
        settings.request_timeout,
    )?;
    let new = es::secure_client(
        &settings.to_url,
        &settings.security.new,
        settings.request_timeout,
    )?;
    let opened = open_checkpoint(&settings)?;
    let legacy_cluster = cluster::connect(&legacy, &settings.from_url, Role::Legacy).await?;
    cluster::connect(&new, &settings.to_url, Role::New).await?;
    let (mut checkpoint, snapshot) = match opened {
        Some(c) if c.complete() => {
            return Ok(summary(
                &settings,
                &c,
                Ending::AlreadyComplete,
                started,
                &[],
            ))
        }
        Some(mut c) => {
            tracing::info!(checkpoint = %settings.checkpoint.display(), done = c.slices.iter().filter(|s| s.done).count(), slices = c.slices.len(), "resuming the backfill");
            let snapshot = resume(&settings, &legacy, &legacy_cluster, &mut c).await?;
            (c, snapshot)
        }
        None => plan(&settings, &legacy, &legacy_cluster).await?,
    };
    let target = alias::resolve_index(&new, &settings.to_index)
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}: create the target index first (`dual-indexer index create`, or `run --create-index`)"))?;
    prepare_target(&settings, &new, &target, &mut checkpoint).await?;

    let dead_letters = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&settings.dead_letters)
        .map_err(|e| {
            anyhow::anyhow!(
                "opening the dead-letter file {}: {e}",
                settings.dead_letters.display()
            )
        })?;
    let slices = checkpoint.slices.len();
    let copy = Arc::new(Copy {
        sink: BulkSink::new(
            new.clone(),
            &settings.to_index,
            settings.retry.clone(),
            settings.request_timeout,
        ),
        snapshot,
        pacer: Pacer::new(settings.max_docs_per_sec),
        counters: RunCounters {
            read: AtomicU64::new(0),
            per_slice: Mutex::new(vec![0; slices]),
        },
        state: Mutex::new(checkpoint),
        dead_letters: Mutex::new(BufWriter::new(dead_letters)),
        stop,
        settings,
    });
    let copied = copy_all(&copy).await;
    // Settings come back whatever happened: complete, interrupted or failed.
    let restored = restore_target(&copy, &new).await;
    let closed = close_reading(&copy).await;
    let checkpoint = lock(&copy.state).clone();
    copied?;
    restored?;
    closed?;
    let ending = if checkpoint.complete() {
        Ending::Complete
    } else {
        Ending::Interrupted
    };
    let per_slice = lock(&copy.counters.per_slice).clone();
    Ok(summary(
        &copy.settings,
        &checkpoint,
        ending,
        started,
        &per_slice,
    ))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes the point in time once every slice is done. An interrupted or failed copy keeps it,
/// so that `--resume` within its keep-alive continues each slice where it stopped.
async fn close_reading(copy: &Copy) -> anyhow::Result<()> {
    if !lock(&copy.state).complete() {
        return Ok(());
    }
    copy.snapshot.clone().close().await;
    let mut state = lock(&copy.state);
    state.pit = None;
    state.write(&copy.settings.checkpoint)
}

/// The checkpoint to continue, if any, after checking it against the settings.
fn open_checkpoint(settings: &BackfillSettings) -> anyhow::Result<Option<Checkpoint>> {
    let path = &settings.checkpoint;
    if !path.exists() {
        anyhow::ensure!(
            !settings.resume,
            "--resume: there is no checkpoint at {} to resume",
            path.display()
        );
        return Ok(None);
    }
    let checkpoint = Checkpoint::read(path)?;
    if let Some(why) = checkpoint.mismatch(&settings.from_index, &settings.to_index) {
        anyhow::bail!("{}: {why}; name another --checkpoint", path.display());
    }
    anyhow::ensure!(
        settings.resume || checkpoint.complete(),
        "an unfinished backfill's checkpoint is at {}: pass --resume to continue it, or remove the file to start over",
        path.display()
    );
    Ok(Some(checkpoint))
}
