//! `backfill`: copy the history that Kafka no longer holds from the legacy cluster into the new
//! one, beside the live replay.
//!
//! The legacy index is split into `_id` ranges ([`checkpoint::plan`]) and each range is read in
//! `_id` order with `search_after`, a page at a time, by up to `concurrency` workers. Every page
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
pub mod pace;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::watch;

use self::checkpoint::{ChangedSettings, Checkpoint, SliceState};
use self::pace::Pacer;
use crate::backoff::{backoff, jitter};
use crate::cutover::{alias, index};
use crate::dlq::ErrorClass;
use crate::es::{self, Hit};
use crate::files::unix_now;
use crate::secrets::redact_url;
use crate::sink::{
    Batch, BulkSink, ItemOutcome, Original, Provenance, Refusal, RetryPolicy, Tracked,
};
use crate::transform::{legacy, Op, Write};

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
    /// Id ranges to split the legacy index into.
    pub slices: usize,
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

/// Counters of this run, shared by the workers and the progress reporter.
#[derive(Debug, Default)]
struct RunCounters {
    read: AtomicU64,
    per_slice: Mutex<Vec<u64>>,
}

/// A backfilled write as the sink knows it: its slice and its place in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct InPage {
    slice: usize,
    n: usize,
}

impl Tracked for InPage {
    fn position(&self) -> (i32, i64) {
        (self.slice as i32, self.n as i64)
    }
}

/// What the workers share.
struct Copy {
    settings: BackfillSettings,
    legacy: Elasticsearch,
    sink: BulkSink<InPage>,
    state: Mutex<Checkpoint>,
    dead_letters: Mutex<BufWriter<File>>,
    pacer: Pacer,
    counters: RunCounters,
    stop: watch::Receiver<bool>,
}

/// One page of a slice.
struct Page {
    hits: Vec<Hit>,
    /// The slice has nothing after this page.
    last: bool,
}

/// One line of the dead-letter file.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetterLine {
    /// The document `_id`.
    pub id: String,
    /// The legacy index it was read from.
    pub from_index: String,
    /// The slice that read it.
    pub slice: usize,
    /// `transform`, `mapping` or `retries_exhausted`.
    pub class: String,
    /// Why.
    pub reason: String,
    /// Elasticsearch's error type, when there is one.
    pub es_type: Option<String>,
    /// Bulk attempts made (0 if it never reached Elasticsearch).
    pub attempts: u32,
    /// The legacy `_source`, as read.
    pub source: Value,
    /// Unix seconds.
    pub at: u64,
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
    let mut checkpoint = match open_checkpoint(&settings)? {
        Some(c) if c.complete() => {
            return Ok(summary(
                &settings,
                &c,
                Ending::AlreadyComplete,
                started,
                &[],
            ))
        }
        Some(c) => {
            tracing::info!(checkpoint = %settings.checkpoint.display(), done = c.slices.iter().filter(|s| s.done).count(), slices = c.slices.len(), "resuming the backfill");
            c
        }
        None => plan(&settings, &legacy).await?,
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
        legacy,
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
    let checkpoint = lock(&copy.state).clone();
    copied?;
    restored?;
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

/// Counts the legacy index, splits it into slices and writes the first checkpoint.
async fn plan(settings: &BackfillSettings, legacy: &Elasticsearch) -> anyhow::Result<Checkpoint> {
    let total = es::count(legacy, &settings.from_index).await?;
    let sample = sample_ids(legacy, &settings.from_index, settings.slices).await?;
    let slices = checkpoint::plan(sample, settings.slices);
    if slices.len() < settings.slices {
        tracing::info!(
            asked = settings.slices,
            planned = slices.len(),
            total,
            "fewer slices than asked: the legacy index has too few distinct ids"
        );
    }
    let checkpoint = Checkpoint {
        format: checkpoint::FORMAT,
        from_url: redact_url(&settings.from_url),
        from_index: settings.from_index.clone(),
        to_url: redact_url(&settings.to_url),
        to_index: settings.to_index.clone(),
        versions: settings.versions,
        started_at: unix_now(),
        finished_at: None,
        total_at_start: total,
        changed_settings: ChangedSettings::default(),
        slices,
    };
    checkpoint.write(&settings.checkpoint)?;
    tracing::info!(total, slices = checkpoint.slices.len(), checkpoint = %settings.checkpoint.display(), "backfill planned");
    Ok(checkpoint)
}

/// A random sample of ids, large enough to split the index into `slices` even parts.
async fn sample_ids(
    client: &Elasticsearch,
    index: &str,
    slices: usize,
) -> anyhow::Result<Vec<String>> {
    let body = json!({
        "size": (slices * 200).min(10_000),
        "_source": false,
        "query": {"function_score": {"query": {"match_all": {}}, "random_score": {"seed": 7, "field": "_seq_no"}}}
    });
    let reply = es::request_ok(
        client,
        Method::Post,
        &format!("/{index}/_search"),
        Some(&body),
        &format!("sampling the ids of `{index}`"),
    )
    .await?;
    Ok(reply["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["_id"].as_str().map(str::to_owned))
        .collect())
}

/// Raises `index.gc_deletes` and enters bulk-load settings as asked, recording in the checkpoint
/// (before changing anything) what to put back.
async fn prepare_target(
    settings: &BackfillSettings,
    client: &Elasticsearch,
    target: &str,
    checkpoint: &mut Checkpoint,
) -> anyhow::Result<()> {
    let changed = &mut checkpoint.changed_settings;
    changed.index = Some(target.to_owned());
    if let Some(gc_deletes) = &settings.gc_deletes {
        if !changed.gc_deletes_raised {
            changed.gc_deletes_before = index::gc_deletes(client, target).await?;
            changed.gc_deletes_raised = true;
            checkpoint.write(&settings.checkpoint)?;
        }
        index::put_settings(client, target, &json!({"gc_deletes": gc_deletes})).await?;
        tracing::info!(
            index = target,
            gc_deletes,
            "delete tombstones kept longer for the backfill"
        );
    }
    let changed = &mut checkpoint.changed_settings;
    if settings.bulk_load && !changed.bulk_load {
        let current = index::load_settings(client, target).await?;
        match current.first() {
            Some(s) if s.bulk_load => {
                tracing::info!(index = target, "the target is already in bulk-load settings; the backfill leaves them as they are");
            }
            current => {
                let replicas = current.and_then(|s| s.replicas).unwrap_or(1);
                changed.bulk_load = true;
                checkpoint.write(&settings.checkpoint)?;
                index::enter_bulk_load(client, target, replicas).await?;
                tracing::info!(
                    index = target,
                    replicas,
                    "bulk-load settings on for the backfill"
                );
            }
        }
    }
    Ok(())
}

/// Puts back what [`prepare_target`] changed, and records that it did.
async fn restore_target(copy: &Copy, client: &Elasticsearch) -> anyhow::Result<()> {
    let mut changed = lock(&copy.state).changed_settings.clone();
    let Some(target) = changed.index.clone() else {
        return Ok(());
    };
    if changed.bulk_load {
        for current in index::load_settings(client, &target).await? {
            if let Some(values) = index::restore(client, &current, 1).await? {
                tracing::info!(index = %current.index, settings = %values, "bulk-load settings restored");
            }
        }
        changed.bulk_load = false;
    }
    if changed.gc_deletes_raised {
        index::put_settings(
            client,
            &target,
            &json!({"gc_deletes": changed.gc_deletes_before}),
        )
        .await?;
        tracing::info!(index = %target, gc_deletes = ?changed.gc_deletes_before, "index.gc_deletes restored");
        changed.gc_deletes_raised = false;
        changed.gc_deletes_before = None;
    }
    let mut state = lock(&copy.state);
    state.changed_settings = changed;
    state.write(&copy.settings.checkpoint)
}

/// Copies every unfinished slice, `concurrency` at a time, reporting progress as it goes.
async fn copy_all(copy: &Arc<Copy>) -> anyhow::Result<()> {
    let (todo, total, already): (VecDeque<usize>, u64, u64) = {
        let state = lock(&copy.state);
        (
            state
                .slices
                .iter()
                .filter(|s| !s.done)
                .map(|s| s.slice)
                .collect(),
            state.total_at_start,
            state.documents_read(),
        )
    };
    let queue = Arc::new(Mutex::new(todo));
    let reporter = tokio::spawn(report_progress(Arc::clone(copy), total, already));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..copy.settings.concurrency.max(1) {
        let (copy, queue) = (Arc::clone(copy), Arc::clone(&queue));
        workers.spawn(async move {
            loop {
                let next = lock(&queue).pop_front();
                let Some(slice) = next else { return Ok(()) };
                if *copy.stop.borrow() {
                    return Ok(());
                }
                copy_slice(&copy, slice).await?;
            }
        });
    }
    let mut result = Ok(());
    while let Some(joined) = workers.join_next().await {
        let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let (Err(e), Ok(())) = (outcome, &result) {
            // One slice failing stops the others after their current page.
            workers.abort_all();
            result = Err(e);
        }
    }
    reporter.abort();
    let mut state = lock(&copy.state);
    if state.complete() && state.finished_at.is_none() {
        state.finished_at = Some(unix_now());
        state.write(&copy.settings.checkpoint)?;
    }
    result
}

/// Logs and publishes progress every `progress_every`, and drives the progress bar.
async fn report_progress(copy: Arc<Copy>, total: u64, already: u64) {
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

/// Copies one slice from its cursor to its end, or until told to stop.
async fn copy_slice(copy: &Copy, slice: usize) -> anyhow::Result<()> {
    let until = lock(&copy.state).slices[slice].clone();
    let mut page = read_page(copy, &until, until.after.clone()).await?;
    let mut stop = copy.stop.clone();
    loop {
        tokio::select! {
            () = copy.pacer.admit(page.hits.len()) => {}
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        }
        let next_after = page.hits.last().map(|h| h.id.clone());
        let read_ahead = async {
            match (&next_after, page.last) {
                (Some(after), false) => Some(read_page(copy, &until, Some(after.clone())).await),
                _ => None,
            }
        };
        let (written, next) = tokio::join!(write_page(copy, slice, &page.hits), read_ahead);
        let tally = written?;
        record_page(copy, slice, &page, next_after, tally)?;
        match next {
            Some(next) if !*copy.stop.borrow() => page = next?,
            _ => return Ok(()),
        }
    }
}

/// Reads the page of `slice` after `after`, retrying transient failures.
async fn read_page(copy: &Copy, slice: &SliceState, after: Option<String>) -> anyhow::Result<Page> {
    let settings = &copy.settings;
    let with_version = settings.versions == VersionStrategy::LegacyVersion;
    let mut attempt = 0;
    loop {
        let read = es::page_by_id(
            &copy.legacy,
            &settings.from_index,
            after.as_deref(),
            settings.page_size,
            with_version,
        )
        .await;
        match read {
            Ok(mut hits) => {
                let full = hits.len() == settings.page_size;
                let past = hits.iter().position(|h| slice.is_past(&h.id));
                if let Some(end) = past {
                    hits.truncate(end);
                }
                return Ok(Page {
                    hits,
                    last: past.is_some() || !full,
                });
            }
            Err(e) if e.is::<es::Refused>() => {
                return Err(e.context(format!("slice {}: reading the legacy index", slice.slice)))
            }
            Err(e) if attempt + 1 < settings.retry.max_attempts => {
                let wait = backoff(attempt, settings.retry.base, settings.retry.max, jitter());
                tracing::warn!(slice = slice.slice, error = %e, attempt, ?wait, "reading the legacy index failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "slice {}: giving up after {} attempts",
                    slice.slice,
                    attempt + 1
                )))
            }
        }
    }
}

/// What happened to the documents of one page.
#[derive(Debug, Default)]
struct Tally {
    written: u64,
    kept_newer: u64,
    dead_lettered: u64,
}

/// Transforms and writes one page; dead letters are on disk when it returns.
async fn write_page(copy: &Copy, slice: usize, hits: &[Hit]) -> anyhow::Result<Tally> {
    let settings = &copy.settings;
    let mut tally = Tally::default();
    let mut letters = Vec::new();
    let mut batch = Batch::with_capacity(hits.len() * 512, hits.len());
    for (n, hit) in hits.iter().enumerate() {
        let version = match settings.versions {
            VersionStrategy::Yield => 0,
            VersionStrategy::LegacyVersion => hit.version.ok_or_else(|| {
                anyhow::anyhow!(
                    "the legacy cluster returned `{}` without its _version",
                    hit.id
                )
            })?,
        };
        match legacy::to_new(&hit.source) {
            Ok(document) => {
                let original = serde_json::to_vec(&hit.source)?;
                let write = Write {
                    id: Cow::Borrowed(&hit.id),
                    version,
                    op: Op::Index(serde_json::to_vec(&document)?),
                };
                let ticket = InPage { slice, n };
                batch.push(
                    write,
                    Provenance {
                        ticket,
                        key: Some(hit.id.as_bytes()),
                        payload: &original,
                    },
                );
            }
            Err(reason) => letters.push(dead_letter(
                settings,
                slice,
                &hit.id,
                hit.source.clone(),
                Refusal {
                    class: ErrorClass::Transform,
                    reason,
                    es_type: None,
                    attempts: 0,
                    original: Original::default(),
                },
            )),
        }
    }
    if !batch.is_empty() {
        let outcomes = copy
            .sink
            .deliver(batch)
            .await
            .map_err(|e| anyhow::anyhow!("slice {slice}: {e}"))?;
        for (_, outcome) in outcomes {
            match outcome {
                ItemOutcome::Applied(_) => tally.written += 1,
                ItemOutcome::AlreadyApplied => tally.kept_newer += 1,
                // Backfill's sink has no notion of revocation: it never drops an item.
                ItemOutcome::Revoked => {}
                ItemOutcome::DeadLetter(refusal) => {
                    let original = &refusal.original;
                    let id = String::from_utf8_lossy(original.key.as_deref().unwrap_or_default())
                        .into_owned();
                    let source = serde_json::from_slice(&original.payload).unwrap_or(Value::Null);
                    letters.push(dead_letter(settings, slice, &id, source, refusal));
                }
            }
        }
    }
    tally.dead_lettered = letters.len() as u64;
    if !letters.is_empty() {
        let mut file = lock(&copy.dead_letters);
        for letter in &letters {
            metrics::counter!("backfill.docs.dead_lettered", "class" => letter.class.clone())
                .increment(1);
            tracing::warn!(id = %letter.id, slice, class = %letter.class, reason = %letter.reason, "dead-lettered");
            serde_json::to_writer(&mut *file, letter)?;
            file.write_all(b"\n")?;
        }
        file.flush()?;
        file.get_ref().sync_data()?;
    }
    metrics::counter!("backfill.docs.written").increment(tally.written);
    metrics::counter!("backfill.docs.kept_newer").increment(tally.kept_newer);
    Ok(tally)
}

#[allow(clippy::too_many_arguments)]
/// A line of the dead-letter file for document `id` of `slice`, read as `source`.
fn dead_letter(
    settings: &BackfillSettings,
    slice: usize,
    id: &str,
    source: Value,
    refusal: Refusal,
) -> DeadLetterLine {
    DeadLetterLine {
        id: id.to_owned(),
        from_index: settings.from_index.clone(),
        slice,
        class: refusal.class.to_string(),
        reason: refusal.reason,
        es_type: refusal.es_type,
        attempts: refusal.attempts,
        source,
        at: unix_now(),
    }
}

/// Moves the slice's cursor past a written page and persists the checkpoint.
fn record_page(
    copy: &Copy,
    slice: usize,
    page: &Page,
    after: Option<String>,
    tally: Tally,
) -> anyhow::Result<()> {
    let read = page.hits.len() as u64;
    copy.counters.read.fetch_add(read, Ordering::Relaxed);
    lock(&copy.counters.per_slice)[slice] += read;
    metrics::counter!("backfill.docs.read").increment(read);
    let mut state = lock(&copy.state);
    let s = &mut state.slices[slice];
    if after.is_some() {
        s.after = after;
    }
    s.read += read;
    s.written += tally.written;
    s.kept_newer += tally.kept_newer;
    s.dead_lettered += tally.dead_lettered;
    if page.last {
        s.done = true;
        tracing::info!(
            slice,
            read = s.read,
            written = s.written,
            kept_newer = s.kept_newer,
            dead_lettered = s.dead_lettered,
            "slice done"
        );
    }
    state.write(&copy.settings.checkpoint)
}

fn summary(
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
        "{:>5}  {:<40}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  status",
        "slice", "ids", "read (run)", "read", "written", "kept newer", "dead"
    );
    for s in &summary.slices {
        let st = &s.state;
        let range = format!(
            "({}, {}]",
            st.start_after.as_deref().unwrap_or("start"),
            st.until.as_deref().unwrap_or("end")
        );
        let _ = writeln!(
            out,
            "{:>5}  {:<40}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}  {}",
            st.slice,
            range,
            s.read_this_run,
            st.read,
            st.written,
            st.kept_newer,
            st.dead_lettered,
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
