//! `dual-indexer verify`: prove the new cluster equals the legacy one, document by document and
//! query by query.
//!
//! - Documents: the legacy index is read whole (a point in time or a scroll, never an `_id`
//!   sort: [`crate::es::read`]), one page ahead in its own task, and each page is looked up in
//!   the new index with `_mget` (with each document's routing). Each legacy document goes
//!   through the same legacy → new transform as `backfill`
//!   ([`crate::transform::legacy::to_new`]) and is compared field by field ([`diff`]). Then the
//!   new index is read the same way, without sources, and each page is looked up in the legacy
//!   index: what is not there is only in the new one. Memory holds two pages and the capped
//!   examples (the smallest ids of each kind), whatever the index size; the counts are exact.
//!   `--sample N` checks N random legacy documents instead.
//! - Queries: [`queries`].
//!
//! The report ([`Report`], schema `schemas/verify-report.schema.json`) is what `cutover` reads.

pub mod diff;
pub mod queries;
mod report;

pub use report::{
    summary, DocumentDiff, DocumentReport, IdList, QueryReport, Report, SideReport, Untransformable,
};

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::es::cluster::{self, Cluster, Role};
use crate::es::read::{mget, Hit, PageSpec, Snapshot};
use crate::es::{self};
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

/// How long a verify's point in time outlives its last read.
const KEEP_ALIVE: &str = "10m";

/// One cluster to compare: its client, what answered, its index.
struct Side<'a> {
    client: &'a Elasticsearch,
    cluster: &'a Cluster,
    index: &'a str,
}

/// Reads `side`'s index whole, one page ahead, from its own task.
async fn stream(
    side: &Side<'_>,
    spec: PageSpec,
) -> anyhow::Result<mpsc::Receiver<anyhow::Result<Vec<Hit>>>> {
    let snapshot = Snapshot::open(side.client, side.cluster, side.index, 1, KEEP_ALIVE).await?;
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut cursor = snapshot.slice(0, None, spec);
        loop {
            let page = cursor.next_page().await;
            let end = page.as_ref().map_or(true, |p| p.is_empty()) || cursor.finished();
            if tx.send(page).await.is_err() || end {
                break;
            }
        }
        cursor.close().await;
        snapshot.close().await;
    });
    Ok(rx)
}

/// The `max` smallest ids of one kind of difference, with what is known of each: the report's
/// examples come out in `_id` order whatever order the documents were read in.
struct Smallest<T> {
    max: usize,
    items: BTreeMap<String, T>,
}

impl<T> Smallest<T> {
    fn new(max: usize) -> Self {
        Self {
            max,
            items: BTreeMap::new(),
        }
    }

    fn add(&mut self, id: String, item: T) {
        if self.max == 0 {
            return;
        }
        self.items.insert(id, item);
        if self.items.len() > self.max {
            self.items.pop_last();
        }
    }
}

struct Checker {
    ignore: Ignore,
    report: DocumentReport,
    missing: Smallest<()>,
    only_new: Smallest<()>,
    differing: Smallest<Vec<diff::FieldDiff>>,
    untransformable: Smallest<String>,
}

impl Checker {
    fn new(ignore: Vec<String>, max: usize) -> Self {
        Self {
            ignore: Ignore::new(ignore.clone()),
            report: DocumentReport {
                ignored_fields: ignore,
                ..DocumentReport::default()
            },
            missing: Smallest::new(max),
            only_new: Smallest::new(max),
            differing: Smallest::new(max),
            untransformable: Smallest::new(max),
        }
    }

    fn compare(&mut self, id: String, legacy_source: &Value, new_source: &Value) {
        self.report.checked += 1;
        match legacy::to_new(legacy_source) {
            Err(reason) => {
                self.report.untransformable_count += 1;
                self.untransformable.add(id, reason);
            }
            Ok(expected) => {
                let fields = diff::diff(&expected, new_source, &self.ignore);
                if fields.is_empty() {
                    self.report.matching += 1;
                } else {
                    self.report.differing_count += 1;
                    self.differing.add(id, fields);
                }
            }
        }
    }

    fn missing(&mut self, id: String) {
        self.report.checked += 1;
        self.report.missing_in_new.count += 1;
        self.missing.add(id, ());
    }

    fn only_new(&mut self, id: String) {
        self.report.only_in_new.count += 1;
        self.only_new.add(id, ());
    }

    /// The report, with the examples in `_id` order.
    fn finish(self) -> DocumentReport {
        let mut report = self.report;
        report.missing_in_new.ids = self.missing.items.into_keys().collect();
        report.only_in_new.ids = self.only_new.items.into_keys().collect();
        report.differing = self
            .differing
            .items
            .into_iter()
            .map(|(id, fields)| DocumentDiff { id, fields })
            .collect();
        report.untransformable = self
            .untransformable
            .items
            .into_iter()
            .map(|(id, reason)| Untransformable { id, reason })
            .collect();
        report
    }
}

/// The ids of a page with their routings, as `_mget` takes them.
fn keys(page: &[Hit]) -> Vec<(&str, Option<&str>)> {
    page.iter()
        .map(|h| (h.id.as_str(), h.routing.as_deref()))
        .collect()
}

async fn check_all(
    legacy: &Side<'_>,
    new: &Side<'_>,
    settings: &VerifySettings,
    checker: &mut Checker,
    total: u64,
) -> anyhow::Result<()> {
    let bar = crate::telemetry::progress_bar(total, "verify", "documents");
    let mut last_log = Instant::now();
    let spec = PageSpec {
        size: settings.page_size,
        version: false,
        source: true,
    };
    let mut pages = stream(legacy, spec).await?;
    while let Some(page) = pages.recv().await {
        let page = page?;
        let found = mget(new.client, new.cluster, new.index, &keys(&page), true).await?;
        for (hit, new_source) in page.into_iter().zip(found) {
            match new_source {
                Some(new_source) => checker.compare(hit.id, &hit.source, &new_source),
                None => checker.missing(hit.id),
            }
            bar.inc(1);
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
    let ids_only = PageSpec {
        source: false,
        ..spec
    };
    let mut pages = stream(new, ids_only).await?;
    while let Some(page) = pages.recv().await {
        let page = page?;
        let found = mget(
            legacy.client,
            legacy.cluster,
            legacy.index,
            &keys(&page),
            false,
        )
        .await?;
        for (hit, legacy_doc) in page.into_iter().zip(found) {
            if legacy_doc.is_none() {
                checker.only_new(hit.id);
            }
        }
    }
    Ok(())
}

/// A seeded random sample of legacy documents.
async fn sample_docs(
    client: &Elasticsearch,
    index: &str,
    size: usize,
    seed: u64,
) -> anyhow::Result<Vec<Hit>> {
    let body = json!({
        "size": size,
        "query": {"function_score": {"query": {"match_all": {}}, "random_score": {"seed": seed, "field": "_seq_no"}}}
    });
    let mut reply = es::request_ok(
        client,
        Method::Post,
        &format!("/{index}/_search"),
        Some(&body),
        &format!("sampling `{index}`"),
    )
    .await?;
    let Value::Array(hits) = reply["hits"]["hits"].take() else {
        anyhow::bail!("sampling `{index}` answered without hits: {reply}");
    };
    Ok(hits.into_iter().filter_map(Hit::from_json).collect())
}

async fn check_sample(
    legacy: &Side<'_>,
    new: &Side<'_>,
    settings: &VerifySettings,
    checker: &mut Checker,
    size: usize,
) -> anyhow::Result<()> {
    let sample = sample_docs(legacy.client, legacy.index, size, settings.seed).await?;
    for chunk in sample.chunks(settings.page_size.max(1)) {
        let found = mget(new.client, new.cluster, new.index, &keys(chunk), true).await?;
        for (hit, new_source) in chunk.iter().zip(found) {
            match new_source {
                Some(new_source) => checker.compare(hit.id.clone(), &hit.source, &new_source),
                None => checker.missing(hit.id.clone()),
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
            for (i, hit) in docs.iter().enumerate() {
                if let Ok(t) = legacy::legacy_tags(&hit.source) {
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
            &queries::new_query(&query)?.body,
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
    let legacy_cluster = cluster::connect(&legacy, &settings.legacy_url, Role::Legacy).await?;
    let new_cluster = cluster::connect(&new, &settings.new_url, Role::New).await?;
    let legacy_side = side(&legacy, &settings.legacy_url, &settings.legacy_index).await?;
    let new_side = side(&new, &settings.new_url, &settings.new_index).await?;
    let (l, n) = (
        Side {
            client: &legacy,
            cluster: &legacy_cluster,
            index: &settings.legacy_index,
        },
        Side {
            client: &new,
            cluster: &new_cluster,
            index: &settings.new_index,
        },
    );
    let mut checker = Checker::new(settings.ignore.clone(), settings.max_examples);
    match settings.sample {
        None => {
            checker.report.mode = "full";
            check_all(&l, &n, settings, &mut checker, legacy_side.count).await?;
        }
        Some(size) => {
            checker.report.mode = "sample";
            check_sample(&l, &n, settings, &mut checker, size).await?;
        }
    }
    let queries = check_queries(&legacy, &new, settings).await?;
    let documents = checker.finish();
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
