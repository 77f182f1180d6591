//! Copying the slices: read a page of the slice, transform it, write it through the bulk sink,
//! dead-letter what cannot be copied, and move the slice's cursor.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::report::report_progress;
use super::{lock, BackfillSettings, Copy, VersionStrategy};
use crate::backoff::{backoff, jitter};
use crate::dlq::ErrorClass;
use crate::es::read::{Hit, PageSpec, SliceCursor};
use crate::es::{self};
use crate::files::unix_now;
use crate::sink::{Batch, ItemOutcome, Original, Provenance, Refusal, Tracked};
use crate::transform::{legacy, Op, Write};

/// A backfilled write as the sink knows it: its slice and its place in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct InPage {
    slice: usize,
    n: usize,
}

impl Tracked for InPage {
    fn position(&self) -> (i32, i64) {
        (self.slice as i32, self.n as i64)
    }
}

/// One page of a slice.
struct Page {
    hits: Vec<Hit>,
    /// Where the slice continues after this page (a point in time only).
    after: Option<Value>,
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

/// Copies every unfinished slice, `concurrency` at a time, reporting progress as it goes.
pub(super) async fn copy_all(copy: &Arc<Copy>) -> anyhow::Result<()> {
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

/// Copies one slice from its cursor to its end, or until told to stop.
async fn copy_slice(copy: &Copy, slice: usize) -> anyhow::Result<()> {
    let after = lock(&copy.state).slices[slice].after.clone();
    let spec = PageSpec {
        size: copy.settings.page_size,
        version: copy.settings.versions == VersionStrategy::LegacyVersion,
        source: true,
    };
    let mut cursor = copy.snapshot.slice(slice, after, spec);
    let mut page = read_page(copy, slice, &mut cursor).await?;
    let mut stop = copy.stop.clone();
    let result = loop {
        tokio::select! {
            () = copy.pacer.admit(page.hits.len()) => {}
            _ = stop.wait_for(|stop| *stop) => break Ok(()),
        }
        let read_ahead = async {
            if page.last {
                None
            } else {
                Some(read_page(copy, slice, &mut cursor).await)
            }
        };
        let (written, next) = tokio::join!(write_page(copy, slice, &page.hits), read_ahead);
        let tally = match written {
            Ok(tally) => tally,
            Err(e) => break Err(e),
        };
        if let Err(e) = record_page(copy, slice, &page, tally) {
            break Err(e);
        }
        match next {
            Some(next) if !*copy.stop.borrow() => match next {
                Ok(next) => page = next,
                Err(e) => break Err(e),
            },
            _ => break Ok(()),
        }
    };
    cursor.close().await;
    result
}

/// Reads the next page of `slice`, retrying transient failures.
async fn read_page(copy: &Copy, slice: usize, cursor: &mut SliceCursor) -> anyhow::Result<Page> {
    let settings = &copy.settings;
    let mut attempt = 0;
    loop {
        match cursor.next_page().await {
            Ok(hits) => {
                return Ok(Page {
                    last: hits.is_empty() || cursor.finished(),
                    after: cursor.after().cloned(),
                    hits,
                })
            }
            Err(e) if e.is::<es::Refused>() => {
                return Err(e.context(format!("slice {slice}: reading the legacy index")))
            }
            Err(e) if attempt + 1 < settings.retry.max_attempts => {
                let wait = backoff(attempt, settings.retry.base, settings.retry.max, jitter());
                tracing::warn!(slice, error = %e, attempt, ?wait, "reading the legacy index failed; retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(e.context(format!(
                    "slice {slice}: giving up after {} attempts",
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
                    routing: hit.routing.as_deref().map(Cow::Borrowed),
                    version,
                    op: Op::Index(serde_json::to_vec(&document)?.into()),
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
fn record_page(copy: &Copy, slice: usize, page: &Page, tally: Tally) -> anyhow::Result<()> {
    let read = page.hits.len() as u64;
    copy.counters.read.fetch_add(read, Ordering::Relaxed);
    lock(&copy.counters.per_slice)[slice] += read;
    metrics::counter!("backfill.docs.read").increment(read);
    let mut state = lock(&copy.state);
    let s = &mut state.slices[slice];
    if page.after.is_some() {
        s.after = page.after.clone();
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
