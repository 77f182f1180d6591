//! The verify report (`schemas/verify-report.schema.json`) and its summary for people.

use serde::Serialize;

use super::diff::FieldDiff;
use super::queries::QueryOutcome;
use super::settle::{Offsets, Versions};

/// The version of the report's schema (`schema_version`): 2 added settling.
pub const SCHEMA_VERSION: u32 = 2;

/// One side of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct SideReport {
    /// The cluster (credentials removed).
    pub url: String,
    /// The index or alias given.
    pub index: String,
    /// The concrete indices it resolved to.
    pub indices: Vec<String>,
    /// Documents in it.
    pub count: u64,
}

/// Ids of one kind of difference: the full count, and the first `max_examples` ids.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IdList {
    /// How many.
    pub count: u64,
    /// The smallest ids of that kind (at most `--max-examples`), in `_id` order.
    pub ids: Vec<String>,
}

/// A document whose content differs.
#[derive(Debug, Clone, Serialize)]
pub struct DocumentDiff {
    /// The `_id`.
    pub id: String,
    /// The fields that differ.
    pub fields: Vec<FieldDiff>,
    /// The `_version` on each side when it was last read.
    pub versions: Versions,
}

/// A difference that could not be judged before the settle timeout or the last round.
#[derive(Debug, Clone, Serialize)]
pub struct UnsettledDoc {
    /// The `_id`.
    pub id: String,
    /// Why, naming the group that did not get there.
    pub reason: String,
    /// The `_version` on each side when it was last read.
    pub versions: Versions,
}

/// The documents left unsettled: the full count and the first `max_examples`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnsettledList {
    /// How many.
    pub count: u64,
    /// The smallest ids, with the reason.
    pub examples: Vec<UnsettledDoc>,
}

/// A legacy document that has no place in the new schema.
#[derive(Debug, Clone, Serialize)]
pub struct Untransformable {
    /// The `_id`.
    pub id: String,
    /// Why.
    pub reason: String,
}

/// The document check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DocumentReport {
    /// `full` or `sample`.
    pub mode: &'static str,
    /// Legacy documents checked.
    pub checked: u64,
    /// Of those, equal after the transform when first read.
    pub matching: u64,
    /// Differences that disappeared once both groups had passed them (lag).
    pub settled: u64,
    /// Differences that could not be judged in time; they fail the check.
    pub unsettled: UnsettledList,
    /// In the legacy index, not in the new one.
    pub missing_in_new: IdList,
    /// In the new index only (not looked for in sample mode).
    pub only_in_new: IdList,
    /// How many documents differ.
    pub differing_count: u64,
    /// The first differing documents, with their fields.
    pub differing: Vec<DocumentDiff>,
    /// How many legacy documents cannot be transformed.
    pub untransformable_count: u64,
    /// The first of them, with the reason.
    pub untransformable: Vec<Untransformable>,
    /// Fields left out of the comparison.
    pub ignored_fields: Vec<String>,
}

impl DocumentReport {
    /// No document missing, extra or different.
    pub fn clean(&self) -> bool {
        self.missing_in_new.count == 0
            && self.only_in_new.count == 0
            && self.differing_count == 0
            && self.untransformable_count == 0
            && self.unsettled.count == 0
    }
}

/// The query-parity check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueryReport {
    /// Where the corpus came from.
    pub corpus: String,
    /// Queries run.
    pub total: u64,
    /// Same hits on both sides.
    pub equal: u64,
    /// By key and value: the legacy analysis matched more (see the module docs).
    pub analysis: u64,
    /// Any other difference.
    pub different: u64,
    /// Differing hits that were equal when run again after settling (lag).
    pub settled: u64,
    /// Differing hits that could not be run again in time; they fail the check.
    pub unsettled: u64,
    /// Whether `analysis` differences count as failures.
    pub strict: bool,
    /// Every query that did not return equal hits.
    pub differences: Vec<QueryOutcome>,
}

impl QueryReport {
    /// No query answered differently (nor by analysis, when strict).
    pub fn clean(&self) -> bool {
        self.different == 0 && self.unsettled == 0 && (!self.strict || self.analysis == 0)
    }

    /// Counts a query whose hits were judged not equal, and keeps it among the differences.
    pub fn count(&mut self, outcome: QueryOutcome) {
        match outcome.class {
            "analysis" => self.analysis += 1,
            "unsettled" => self.unsettled += 1,
            _ => self.different += 1,
        }
        self.differences.push(outcome);
    }
}

/// Both groups' committed offsets, as the last settle judgement read them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupOffsets {
    /// `--legacy-group`'s.
    pub legacy: Offsets,
    /// `--group`'s.
    pub new: Offsets,
}

/// How the differences of a live migration were settled.
#[derive(Debug, Clone, Serialize)]
pub struct SettleReport {
    /// The command topic.
    pub topic: String,
    /// The dual-indexer's group.
    pub group: String,
    /// The legacy indexer's group.
    pub legacy_group: String,
    /// Whether both indices carry offsets as versions, so version pairs were used.
    pub by_versions: bool,
    /// At most this many rounds (`--settle-rounds`).
    pub max_rounds: u32,
    /// Rounds run for the documents.
    pub rounds: u32,
    /// The time allowed (`--settle-timeout-secs`), for the documents and again for the queries.
    pub timeout_secs: u64,
    /// Documents that differed when first read.
    pub differences: u64,
    /// Of those, equal after settling.
    pub settled: u64,
    /// Of those, still different: real differences.
    pub different: u64,
    /// Of those, not judged in time.
    pub unsettled: u64,
    /// Seconds spent settling, documents and queries.
    pub seconds: f64,
    /// The topic's high watermarks when the check started.
    pub high_watermarks_at_start: Offsets,
    /// The groups' committed offsets the last judgement used.
    pub committed: GroupOffsets,
}

/// The whole report (`--report FILE`, and what `cutover` reads).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The version of `schemas/verify-report.schema.json` it follows ([`SCHEMA_VERSION`]).
    pub schema_version: u32,
    /// `dual-indexer verify`.
    pub tool: &'static str,
    /// The dual-indexer version.
    pub version: &'static str,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds.
    pub finished_at: u64,
    /// The legacy side.
    pub legacy: SideReport,
    /// The new side.
    pub new: SideReport,
    /// The document check.
    pub documents: DocumentReport,
    /// The query check, when one ran.
    pub queries: Option<QueryReport>,
    /// Settling, when it ran (`--legacy-group` given and `--settle-rounds` above 0).
    pub settle: Option<SettleReport>,
    /// No difference of any kind.
    pub clean: bool,
}

/// The human summary of a report.
pub fn summary(report: &Report) -> String {
    let d = &report.documents;
    let mut out = format!(
        "verify {} ({}): legacy {} has {} documents, new {} has {}\n  documents ({}): {} checked, {} equal, {} settled, {} missing in new, {} only in new, {} differing, {} untransformable, {} unsettled\n",
        if report.clean { "CLEAN" } else { "FOUND DIFFERENCES" },
        report.tool,
        report.legacy.index, report.legacy.count, report.new.index, report.new.count,
        d.mode, d.checked, d.matching, d.settled, d.missing_in_new.count, d.only_in_new.count, d.differing_count, d.untransformable_count, d.unsettled.count,
    );
    match &report.settle {
        Some(s) => out.push_str(&format!(
            "  settled: {} of {} differences were lag ({} different, {} unsettled) in {} of at most {} rounds, {:.1}s; groups `{}` and `{}` on `{}`{}\n",
            s.settled, s.differences, s.different, s.unsettled, s.rounds, s.max_rounds, s.seconds,
            s.group, s.legacy_group, s.topic,
            if s.by_versions { ", by offset versions" } else { ", by high watermarks" }
        )),
        None => out.push_str("  not settled: differences are judged as first read (give --legacy-group to settle those that are only lag)\n"),
    }
    for id in &d.missing_in_new.ids {
        out.push_str(&format!("    missing in new: {id}\n"));
    }
    for id in &d.only_in_new.ids {
        out.push_str(&format!("    only in new: {id}\n"));
    }
    for doc in &d.differing {
        for f in &doc.fields {
            out.push_str(&format!(
                "    differs: {} {}: legacy {} new {}{}\n",
                doc.id,
                f.field,
                f.legacy,
                f.new,
                version_pair(&doc.versions)
            ));
        }
    }
    for u in &d.untransformable {
        out.push_str(&format!("    untransformable: {}: {}\n", u.id, u.reason));
    }
    // One stalled group leaves many differences with the same reason: the first few tell it.
    for u in d.unsettled.examples.iter().take(20) {
        out.push_str(&format!(
            "    unsettled: {}{}: {}\n",
            u.id,
            version_pair(&u.versions),
            u.reason
        ));
    }
    if d.unsettled.count > 20 {
        out.push_str(&format!(
            "    … {} more unsettled (examples in the report)\n",
            d.unsettled.count - 20
        ));
    }
    if let Some(q) = &report.queries {
        out.push_str(&format!(
            "  queries ({}): {} run, {} equal, {} settled, {} differ by analysis (by key and value: the legacy text field matched more), {} different, {} unsettled{}\n",
            q.corpus, q.total, q.equal, q.settled, q.analysis, q.different, q.unsettled,
            if q.strict { " (analysis differences count: --strict-queries)" } else { "" }
        ));
        for o in q
            .differences
            .iter()
            .filter(|o| o.class != "analysis" || q.strict)
            .take(20)
        {
            out.push_str(&format!(
                "    {} {:?}{}: legacy {} hits, new {} (only legacy e.g. {:?}, only new e.g. {:?})\n",
                o.kind, o.query.value,
                o.query.key.as_deref().map(|k| format!(" in {k}")).unwrap_or_default(),
                o.legacy_hits, o.new_hits, o.only_legacy, o.only_new
            ));
            if let Some(reason) = &o.reason {
                out.push_str(&format!("      unsettled: {reason}\n"));
            }
        }
    }
    out
}

/// ` (versions legacy 12, new 15)` when either side had one.
fn version_pair(v: &Versions) -> String {
    let show = |v: Option<u64>| v.map_or("none".to_owned(), |v| v.to_string());
    if v.legacy.is_none() && v.new.is_none() {
        return String::new();
    }
    format!(" (versions legacy {}, new {})", show(v.legacy), show(v.new))
}
