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
//! - Settling, while both indexers are live: each difference is read again once both
//!   consumer groups have committed past it ([`settle`] the rule, `recheck` the rounds for
//!   documents, `requery` for queries); only differences that persist, or that a stalled
//!   group kept from being judged, fail the check.
//!
//! The report ([`Report`], schema `schemas/verify-report.schema.json`) is what `cutover` reads.

pub mod diff;
mod pair;
pub mod positions;
pub mod queries;
mod recheck;
mod report;
mod requery;
pub mod settle;

pub use report::{
    summary, DocumentDiff, DocumentReport, GroupOffsets, IdList, QueryReport, Report, SettleReport,
    SideReport, UnsettledDoc, UnsettledList, Untransformable, SCHEMA_VERSION,
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
use pair::Reading;
use positions::{Groups, Positions};
use recheck::{Pending, Settler, Verdict};
use settle::{Judgement, Offsets, Versions};

/// How many differences are held for settling, with both documents; past it, a difference is
/// judged as first read (memory stays bounded however broken a migration is).
const MAX_PENDING: usize = 20_000;

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
    /// Settle differences that are only lag, when set.
    pub settle: Option<SettleSettings>,
}

/// How to settle differences while both indexers are live.
#[derive(Debug, Clone)]
pub struct SettleSettings {
    /// librdkafka settings of the brokers.
    pub kafka: rdkafka::ClientConfig,
    /// The command topic and both groups.
    pub groups: Groups,
    /// At most this many rounds.
    pub rounds: u32,
    /// The time allowed, for the documents and again for the queries.
    pub timeout: Duration,
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
    differing: Smallest<(Vec<diff::FieldDiff>, Versions)>,
    untransformable: Smallest<String>,
    unsettled: Smallest<(String, Versions)>,
    /// Differences waiting for a settle round, when settling.
    pending: Option<BTreeMap<String, Pending>>,
    /// Both indices carry offsets as versions.
    offset_versions: bool,
    /// Differences found when first read, while settling.
    differences: u64,
    /// Of those, judged different (at once, or after the rounds).
    different: u64,
}

impl Checker {
    fn new(ignore: Vec<String>, max: usize, settling: bool, offset_versions: bool) -> Self {
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
            unsettled: Smallest::new(max),
            pending: settling.then(BTreeMap::new),
            offset_versions,
            differences: 0,
            different: 0,
        }
    }

    /// Whether settling may need the page's high watermarks for this reading.
    fn holds(&self, reading: &Reading) -> bool {
        self.pending.is_some() && reading.may_be_lag()
    }

    /// Takes in a first reading of one id; `high`: the watermarks read after it, when settling.
    fn observe(&mut self, first: FirstReading, high: Option<&Offsets>) {
        let FirstReading {
            id,
            routing,
            reading,
            versions,
            legacy,
            new,
        } = first;
        if reading == Reading::Equal {
            self.report.matching += 1;
            return;
        }
        let (Some(high), true) = (high, self.holds(&reading)) else {
            return self.record(id, reading, versions);
        };
        self.differences += 1;
        let room = self.pending.as_ref().is_some_and(|p| p.len() < MAX_PENDING);
        match settle::judge(None, versions, self.offset_versions, high) {
            Judgement::Wait(wait) if room => {
                // Settling is on (`holds`), so the map is there.
                let pending = self.pending.get_or_insert_with(BTreeMap::new);
                pending.insert(
                    id,
                    Pending {
                        routing,
                        wait,
                        versions,
                        legacy,
                        new,
                    },
                );
            }
            _ => {
                self.different += 1;
                self.record(id, reading, versions);
            }
        }
    }

    /// Counts a final reading under its kind.
    fn record(&mut self, id: String, reading: Reading, versions: Versions) {
        match reading {
            Reading::Equal => self.report.settled += 1,
            Reading::MissingInNew => {
                self.report.missing_in_new.count += 1;
                self.missing.add(id, ());
            }
            Reading::OnlyInNew => {
                self.report.only_in_new.count += 1;
                self.only_new.add(id, ());
            }
            Reading::Differing(fields) => {
                self.report.differing_count += 1;
                self.differing.add(id, (fields, versions));
            }
            Reading::Untransformable(reason) => {
                self.report.untransformable_count += 1;
                self.untransformable.add(id, reason);
            }
        }
    }

    /// Takes in the verdicts of the settle rounds.
    fn settled(&mut self, verdicts: Vec<(String, Verdict)>) {
        for (id, verdict) in verdicts {
            match verdict {
                Verdict::Settled => self.report.settled += 1,
                Verdict::Different(reading, versions) => {
                    self.different += 1;
                    self.record(id, reading, versions);
                }
                Verdict::Unsettled(reason, versions) => {
                    self.report.unsettled.count += 1;
                    self.unsettled.add(id, (reason, versions));
                }
            }
        }
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
            .map(|(id, (fields, versions))| DocumentDiff {
                id,
                fields,
                versions,
            })
            .collect();
        report.untransformable = self
            .untransformable
            .items
            .into_iter()
            .map(|(id, reason)| Untransformable { id, reason })
            .collect();
        report.unsettled.examples = self
            .unsettled
            .items
            .into_iter()
            .map(|(id, (reason, versions))| UnsettledDoc {
                id,
                reason,
                versions,
            })
            .collect();
        report
    }
}

/// One id as first read: its routing, what both sides showed, their versions, and the
/// documents read (`None`: absent, or only its id was read).
struct FirstReading {
    id: String,
    routing: Option<String>,
    reading: Reading,
    versions: Versions,
    legacy: Option<Value>,
    new: Option<Value>,
}

impl FirstReading {
    /// A legacy document and what the new index holds under its id.
    fn of(legacy: Hit, new: Option<Hit>, ignore: &Ignore) -> Self {
        Self {
            reading: pair::read(
                Some(&legacy.source),
                new.as_ref().map(|h| &h.source),
                ignore,
            ),
            versions: Versions {
                legacy: legacy.version,
                new: new.as_ref().and_then(|h| h.version),
            },
            id: legacy.id,
            routing: legacy.routing,
            legacy: Some(legacy.source),
            new: new.map(|h| h.source),
        }
    }
}

/// Takes in one page of first readings. The high watermarks are read after the page's lookups,
/// and only when settling needs them.
async fn observe_page(
    checker: &mut Checker,
    positions: Option<&Positions>,
    page: Vec<FirstReading>,
) -> anyhow::Result<()> {
    let high = match positions {
        Some(p) if page.iter().any(|r| checker.holds(&r.reading)) => {
            Some(p.high_watermarks().await?)
        }
        _ => None,
    };
    for r in page {
        checker.observe(r, high.as_ref());
    }
    Ok(())
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
    positions: Option<&Positions>,
    total: u64,
) -> anyhow::Result<()> {
    let bar = crate::telemetry::progress_bar(total, "verify", "documents");
    let mut last_log = Instant::now();
    let spec = PageSpec {
        size: settings.page_size,
        version: positions.is_some(),
        source: true,
    };
    let mut pages = stream(legacy, spec).await?;
    while let Some(page) = pages.recv().await {
        let page = page?;
        let found = mget(new.client, new.cluster, new.index, &keys(&page), true).await?;
        let len = page.len() as u64;
        checker.report.checked += len;
        let readings = page
            .into_iter()
            .zip(found)
            .map(|(hit, new_doc)| FirstReading::of(hit, new_doc, &checker.ignore))
            .collect();
        observe_page(checker, positions, readings).await?;
        bar.inc(len);
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
        // An id the legacy index holds was compared in the first pass.
        let readings = page
            .into_iter()
            .zip(found)
            .filter(|(_, legacy_doc)| legacy_doc.is_none())
            .map(|(hit, _)| FirstReading {
                reading: Reading::OnlyInNew,
                versions: Versions {
                    legacy: None,
                    new: hit.version,
                },
                id: hit.id,
                routing: hit.routing,
                legacy: None,
                new: None,
            })
            .collect();
        observe_page(checker, positions, readings).await?;
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
    positions: Option<&Positions>,
    size: usize,
) -> anyhow::Result<()> {
    let sample = sample_docs(legacy.client, legacy.index, size, settings.seed).await?;
    for chunk in sample.chunks(settings.page_size.max(1)) {
        let found = mget(new.client, new.cluster, new.index, &keys(chunk), true).await?;
        checker.report.checked += chunk.len() as u64;
        let readings = chunk
            .iter()
            .cloned()
            .zip(found)
            .map(|(hit, new_doc)| FirstReading::of(hit, new_doc, &checker.ignore))
            .collect();
        observe_page(checker, positions, readings).await?;
    }
    Ok(())
}

/// Runs one query in its legacy form on the legacy side and translated on the new side; with
/// every id only one side hit.
async fn run_query(
    legacy: &Side<'_>,
    new: &Side<'_>,
    query: &queries::UserQuery,
    max_hits: usize,
) -> anyhow::Result<(queries::QueryOutcome, std::collections::BTreeSet<String>)> {
    let (l, lt) = queries::hit_ids(
        legacy.client,
        legacy.index,
        &queries::legacy_query(query),
        max_hits,
    )
    .await?;
    let (n, nt) = queries::hit_ids(
        new.client,
        new.index,
        &queries::new_query(query)?.body,
        max_hits,
    )
    .await?;
    let disputed = l.symmetric_difference(&n).cloned().collect();
    Ok((
        queries::compare(query.clone(), &l, &n, lt || nt, 5),
        disputed,
    ))
}

async fn check_queries(
    legacy: &Side<'_>,
    new: &Side<'_>,
    settings: &VerifySettings,
    settler: Option<&Settler>,
) -> anyhow::Result<(Option<QueryReport>, Duration)> {
    let (corpus, source) = match &settings.queries {
        Some(path) => (queries::read_corpus(path)?, path.display().to_string()),
        None if settings.sample_queries == 0 => return Ok((None, Duration::ZERO)),
        None => {
            let docs = sample_docs(
                legacy.client,
                legacy.index,
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
    let mut differing = Vec::new();
    for query in corpus {
        let (outcome, ids) = run_query(legacy, new, &query, settings.max_hits).await?;
        report.total += 1;
        match (outcome.class, settler) {
            ("equal", _) => report.equal += 1,
            (_, Some(s)) => differing.push(requery::PendingQuery {
                query,
                outcome,
                high: s.positions.high_watermarks().await?,
                ids,
            }),
            (_, None) => report.count(outcome),
        }
    }
    let settling = Instant::now();
    if let Some(s) = settler {
        for outcome in s.queries(differing, legacy, new, settings.max_hits).await? {
            match outcome.class {
                "equal" => report.settled += 1,
                _ => report.count(outcome),
            }
        }
    }
    Ok((Some(report), settling.elapsed()))
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

/// Whether `index` was built with offsets of `topic` as its external versions: `run` records the
/// topic's partition count in the index's `_meta` exactly then.
async fn built_from_offsets(
    client: &Elasticsearch,
    index: &str,
    topic: &str,
) -> anyhow::Result<bool> {
    let meta = es::read_meta(client, index).await?;
    Ok(meta["dual_indexer"]["partitions"].get(topic).is_some())
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
    let settler = match &settings.settle {
        Some(s) => {
            let positions = Positions::connect(&s.kafka, s.groups.clone())?;
            let offset_versions =
                built_from_offsets(&legacy, &settings.legacy_index, &s.groups.topic).await?
                    && built_from_offsets(&new, &settings.new_index, &s.groups.topic).await?;
            Some(Settler {
                positions,
                rounds: s.rounds,
                timeout: s.timeout,
                offset_versions,
            })
        }
        None => None,
    };
    let at_start = match &settler {
        Some(s) => s.positions.high_watermarks().await?,
        None => Offsets::new(),
    };
    let positions = settler.as_ref().map(|s| &s.positions);
    let mut checker = Checker::new(
        settings.ignore.clone(),
        settings.max_examples,
        settler.is_some(),
        settler.as_ref().is_some_and(|s| s.offset_versions),
    );
    match settings.sample {
        None => {
            checker.report.mode = "full";
            check_all(&l, &n, settings, &mut checker, positions, legacy_side.count).await?;
        }
        Some(size) => {
            checker.report.mode = "sample";
            check_sample(&l, &n, settings, &mut checker, positions, size).await?;
        }
    }
    let settle_started = Instant::now();
    let mut settle = None;
    if let (Some(s), Some(pending)) = (&settler, checker.pending.take()) {
        let settled = s
            .documents(pending, &l, &n, &checker.ignore, settings.page_size)
            .await?;
        checker.settled(settled.verdicts);
        let groups = s.positions.groups();
        settle = Some(SettleReport {
            topic: groups.topic.clone(),
            group: groups.group.clone(),
            legacy_group: groups.legacy_group.clone(),
            by_versions: s.offset_versions,
            max_rounds: s.rounds,
            rounds: settled.rounds,
            timeout_secs: s.timeout.as_secs(),
            differences: checker.differences,
            settled: checker.report.settled,
            different: checker.different,
            unsettled: checker.report.unsettled.count,
            seconds: 0.0,
            high_watermarks_at_start: at_start,
            committed: GroupOffsets {
                legacy: settled.committed.legacy,
                new: settled.committed.new,
            },
        });
    }
    let settling_documents = settle_started.elapsed();
    let (queries, settling_queries) = check_queries(&l, &n, settings, settler.as_ref()).await?;
    if let Some(s) = &mut settle {
        s.seconds = (settling_documents + settling_queries).as_secs_f64();
    }
    let documents = checker.finish();
    let clean = documents.clean() && queries.as_ref().is_none_or(QueryReport::clean);
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        tool: "dual-indexer verify",
        version: env!("CARGO_PKG_VERSION"),
        started_at,
        finished_at: crate::files::unix_now(),
        legacy: legacy_side,
        new: new_side,
        documents,
        queries,
        settle,
        clean,
    })
}
