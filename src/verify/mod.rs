//! `dual-indexer verify`: prove the new cluster equals the legacy one, document by document and
//! query by query.
//!
//! - Documents: both indices are streamed in `_id` order with `search_after`, one page ahead on
//!   each side in its own task, and merge-joined. Each legacy document goes through the same
//!   legacy → new transform as `backfill` ([`crate::transform::legacy::to_new`]) and is compared
//!   field by field ([`diff`]). Memory holds two pages and the capped examples, whatever the
//!   index size. `--sample N` checks N random legacy documents instead.
//! - Queries: [`queries`].
//!
//! The report ([`Report`], schema `schemas/verify-report.schema.json`) is what `cutover` reads.

pub mod diff;
pub mod queries;
mod report;

pub use report::{
    summary, DocumentDiff, DocumentReport, IdList, QueryReport, Report, SideReport, Untransformable,
};

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::es;
use crate::transform::legacy;
use diff::Ignore;

/// What to compare and how.
#[derive(Debug, Clone)]
pub struct VerifySettings {
    /// Credentials and TLS settings of both clusters.
    pub security: crate::es::Security,
    /// Legacy cluster URL and index (or alias).
    pub legacy_url: String,
    /// Legacy index.
    pub legacy_index: String,
    /// New cluster URL and index (or alias).
    pub new_url: String,
    /// New index.
    pub new_index: String,
    /// Check this many random legacy documents instead of all.
    pub sample: Option<usize>,
    /// Seed of the random sample and the sampled query corpus.
    pub seed: u64,
    /// Fields left out of the comparison.
    pub ignore: Vec<String>,
    /// Documents per page.
    pub page_size: usize,
    /// Ids and diffs kept in the report per kind of difference.
    pub max_examples: usize,
    /// Query corpus from a file.
    pub queries: Option<std::path::PathBuf>,
    /// Or: sample this many legacy documents' tags for the corpus (0: no query check).
    pub sample_queries: usize,
    /// Hits compared per query.
    pub max_hits: usize,
    /// Fail on `analysis` query differences too.
    pub strict_queries: bool,
}

/// A page of `(id, _source)` in `_id` order.
type Page = Vec<(String, Value)>;

/// Streams an index in `_id` order, one page ahead, from its own task.
fn stream_by_id(
    client: Elasticsearch,
    index: String,
    page_size: usize,
) -> mpsc::Receiver<anyhow::Result<Page>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut after: Option<String> = None;
        loop {
            let page = es::page_by_id(&client, &index, after.as_deref(), page_size, false)
                .await
                .map(|hits| hits.into_iter().map(|h| (h.id, h.source)).collect::<Page>());
            let last_page = page.as_ref().map_or(true, |p| p.len() < page_size);
            after = page
                .as_ref()
                .ok()
                .and_then(|p| p.last())
                .map(|(id, _)| id.clone());
            if tx.send(page).await.is_err() || last_page {
                return;
            }
        }
    });
    rx
}

fn hits(reply: &Value) -> Page {
    reply["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| Some((h["_id"].as_str()?.to_owned(), h["_source"].clone())))
        .collect()
}

/// One side of the merge join.
struct Cursor {
    pages: mpsc::Receiver<anyhow::Result<Page>>,
    buffer: VecDeque<(String, Value)>,
}

impl Cursor {
    async fn peek(&mut self) -> anyhow::Result<Option<&(String, Value)>> {
        while self.buffer.is_empty() {
            match self.pages.recv().await {
                Some(page) => self.buffer.extend(page?),
                None => return Ok(None),
            }
        }
        Ok(self.buffer.front())
    }

    fn advance(&mut self) -> Option<(String, Value)> {
        self.buffer.pop_front()
    }
}

/// Records one difference in a report, counting all and keeping the first examples.
fn keep<T>(list: &mut Vec<T>, count: &mut u64, max: usize, item: T) {
    *count += 1;
    if list.len() < max {
        list.push(item);
    }
}

struct Checker {
    ignore: Ignore,
    max: usize,
    report: DocumentReport,
}

impl Checker {
    fn compare(&mut self, id: String, legacy_source: &Value, new_source: &Value) {
        self.report.checked += 1;
        match legacy::to_new(legacy_source) {
            Err(reason) => {
                let r = &mut self.report;
                keep(
                    &mut r.untransformable,
                    &mut r.untransformable_count,
                    self.max,
                    Untransformable { id, reason },
                );
            }
            Ok(expected) => {
                let fields = diff::diff(&expected, new_source, &self.ignore);
                if fields.is_empty() {
                    self.report.matching += 1;
                } else {
                    let r = &mut self.report;
                    keep(
                        &mut r.differing,
                        &mut r.differing_count,
                        self.max,
                        DocumentDiff { id, fields },
                    );
                }
            }
        }
    }

    fn missing(&mut self, id: String) {
        self.report.checked += 1;
        let list = &mut self.report.missing_in_new;
        keep(&mut list.ids, &mut list.count, self.max, id);
    }

    fn only_new(&mut self, id: String) {
        let list = &mut self.report.only_in_new;
        keep(&mut list.ids, &mut list.count, self.max, id);
    }
}

async fn check_all(
    legacy: &Elasticsearch,
    new: &Elasticsearch,
    settings: &VerifySettings,
    checker: &mut Checker,
    total: u64,
) -> anyhow::Result<()> {
    let mut l = Cursor {
        pages: stream_by_id(
            legacy.clone(),
            settings.legacy_index.clone(),
            settings.page_size,
        ),
        buffer: VecDeque::new(),
    };
    let mut n = Cursor {
        pages: stream_by_id(new.clone(), settings.new_index.clone(), settings.page_size),
        buffer: VecDeque::new(),
    };
    let bar = crate::telemetry::progress_bar(total, "verify", "documents");
    let mut last_log = Instant::now();
    loop {
        let order = match (l.peek().await?, n.peek().await?) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.as_str().cmp(b.as_str()),
        };
        match order {
            std::cmp::Ordering::Less => {
                let (id, _) = l.advance().unwrap_or_default();
                checker.missing(id);
                bar.inc(1);
            }
            std::cmp::Ordering::Greater => {
                let (id, _) = n.advance().unwrap_or_default();
                checker.only_new(id);
            }
            std::cmp::Ordering::Equal => {
                let (id, legacy_source) = l.advance().unwrap_or_default();
                let (_, new_source) = n.advance().unwrap_or_default();
                checker.compare(id, &legacy_source, &new_source);
                bar.inc(1);
            }
        }
        if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = Instant::now();
            tracing::info!(
                checked = checker.report.checked,
                total,
                rate_per_sec = bar.per_sec() as u64,
                "verify progress"
            );
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// A seeded random sample of legacy documents.
async fn sample_docs(
    client: &Elasticsearch,
    index: &str,
    size: usize,
    seed: u64,
) -> anyhow::Result<Page> {
    let body = json!({
        "size": size,
        "query": {"function_score": {"query": {"match_all": {}}, "random_score": {"seed": seed, "field": "_seq_no"}}}
    });
    let reply = es::request_ok(
        client,
        Method::Post,
        &format!("/{index}/_search"),
        Some(&body),
        &format!("sampling `{index}`"),
    )
    .await?;
    Ok(hits(&reply))
}

async fn check_sample(
    legacy: &Elasticsearch,
    new: &Elasticsearch,
    settings: &VerifySettings,
    checker: &mut Checker,
    size: usize,
) -> anyhow::Result<()> {
    let mut sample = sample_docs(legacy, &settings.legacy_index, size, settings.seed).await?;
    sample.sort_by(|a, b| a.0.cmp(&b.0));
    for chunk in sample.chunks(settings.page_size.max(1)) {
        let ids: Vec<&str> = chunk.iter().map(|(id, _)| id.as_str()).collect();
        let body = json!({ "ids": ids });
        let (status, reply) = es::request(
            new,
            Method::Post,
            &format!("/{}/_mget", settings.new_index),
            Some(&body),
        )
        .await?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "_mget on `{}` failed with HTTP {status}: {reply}",
            settings.new_index
        );
        let docs = reply["docs"].as_array().cloned().unwrap_or_default();
        for ((id, legacy_source), doc) in chunk.iter().zip(docs) {
            if doc["found"] == json!(true) {
                checker.compare(id.clone(), legacy_source, &doc["_source"]);
            } else {
                checker.missing(id.clone());
            }
        }
    }
    Ok(())
}

async fn check_queries(
    legacy: &Elasticsearch,
    new: &Elasticsearch,
    settings: &VerifySettings,
) -> anyhow::Result<Option<QueryReport>> {
    let (corpus, source) = match &settings.queries {
        Some(path) => (queries::read_corpus(path)?, path.display().to_string()),
        None if settings.sample_queries == 0 => return Ok(None),
        None => {
            let docs = sample_docs(
                legacy,
                &settings.legacy_index,
                settings.sample_queries,
                settings.seed ^ 0x9e37,
            )
            .await?;
            let mut tags = Vec::new();
            for (i, (_, source)) in docs.iter().enumerate() {
                if let Ok(t) = legacy::legacy_tags(source) {
                    // One tag per document, chosen by the seed, so the corpus spreads over keys.
                    if let Some(pick) = t.into_iter().nth((settings.seed as usize + i) % 7) {
                        tags.push(pick);
                    }
                }
            }
            (
                queries::corpus_from_tags(&tags),
                format!(
                    "sampled from {} legacy documents (seed {})",
                    docs.len(),
                    settings.seed
                ),
            )
        }
    };
    let mut report = QueryReport {
        corpus: source,
        strict: settings.strict_queries,
        ..QueryReport::default()
    };
    for query in corpus {
        let (l, lt) = queries::hit_ids(
            legacy,
            &settings.legacy_index,
            &queries::legacy_query(&query),
            settings.max_hits,
        )
        .await?;
        let (n, nt) = queries::hit_ids(
            new,
            &settings.new_index,
            &queries::new_query(&query),
            settings.max_hits,
        )
        .await?;
        let outcome = queries::compare(query, &l, &n, lt || nt, 5);
        report.total += 1;
        match outcome.class {
            "equal" => report.equal += 1,
            "analysis" => report.analysis += 1,
            _ => report.different += 1,
        }
        if outcome.class != "equal" {
            report.differences.push(outcome);
        }
    }
    Ok(Some(report))
}

async fn side(client: &Elasticsearch, url: &str, index: &str) -> anyhow::Result<SideReport> {
    let (status, reply) =
        es::request(client, Method::Get, &format!("/{index}/_settings"), None).await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "index `{index}` on {} cannot be read (HTTP {status}): {reply}",
        crate::secrets::redact_url(url)
    );
    let indices = reply
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    es::refresh(client, index).await?;
    Ok(SideReport {
        url: crate::secrets::redact_url(url),
        index: index.to_owned(),
        indices,
        count: es::count(client, index).await?,
    })
}

/// Runs the whole check.
pub async fn run(settings: &VerifySettings) -> anyhow::Result<Report> {
    let started_at = crate::files::unix_now();
    let timeout = Duration::from_secs(120);
    let legacy = es::secure_client(&settings.legacy_url, &settings.security.legacy, timeout)?;
    let new = es::secure_client(&settings.new_url, &settings.security.new, timeout)?;
    let legacy_side = side(&legacy, &settings.legacy_url, &settings.legacy_index).await?;
    let new_side = side(&new, &settings.new_url, &settings.new_index).await?;
    let mut checker = Checker {
        ignore: Ignore::new(settings.ignore.clone()),
        max: settings.max_examples,
        report: DocumentReport {
            ignored_fields: settings.ignore.clone(),
            ..DocumentReport::default()
        },
    };
    match settings.sample {
        None => {
            checker.report.mode = "full";
            check_all(&legacy, &new, settings, &mut checker, legacy_side.count).await?;
        }
        Some(n) => {
            checker.report.mode = "sample";
            check_sample(&legacy, &new, settings, &mut checker, n).await?;
        }
    }
    let queries = check_queries(&legacy, &new, settings).await?;
    let documents = checker.report;
    let clean = documents.clean() && queries.as_ref().is_none_or(QueryReport::clean);
    Ok(Report {
        tool: "dual-indexer verify",
        version: env!("CARGO_PKG_VERSION"),
        started_at,
        finished_at: crate::files::unix_now(),
        legacy: legacy_side,
        new: new_side,
        documents,
        queries,
        clean,
    })
}
