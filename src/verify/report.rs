//! The verify report (`schemas/verify-report.schema.json`) and its summary for people.

use serde::Serialize;

use super::diff::FieldDiff;
use super::queries::QueryOutcome;

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
    /// Of those, equal after the transform.
    pub matching: u64,
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
    /// Whether `analysis` differences count as failures.
    pub strict: bool,
    /// Every query that did not return equal hits.
    pub differences: Vec<QueryOutcome>,
}

impl QueryReport {
    /// No query answered differently (nor by analysis, when strict).
    pub fn clean(&self) -> bool {
        self.different == 0 && (!self.strict || self.analysis == 0)
    }
}

/// The whole report (`--report FILE`, and what `cutover` reads).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
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
    /// No difference of any kind.
    pub clean: bool,
}

/// The human summary of a report.
pub fn summary(report: &Report) -> String {
    let d = &report.documents;
    let mut out = format!(
        "verify {} ({}): legacy {} has {} documents, new {} has {}\n  documents ({}): {} checked, {} equal, {} missing in new, {} only in new, {} differing, {} untransformable\n",
        if report.clean { "CLEAN" } else { "FOUND DIFFERENCES" },
        report.tool,
        report.legacy.index, report.legacy.count, report.new.index, report.new.count,
        d.mode, d.checked, d.matching, d.missing_in_new.count, d.only_in_new.count, d.differing_count, d.untransformable_count,
    );
    for id in &d.missing_in_new.ids {
        out.push_str(&format!("    missing in new: {id}\n"));
    }
    for id in &d.only_in_new.ids {
        out.push_str(&format!("    only in new: {id}\n"));
    }
    for doc in &d.differing {
        for f in &doc.fields {
            out.push_str(&format!(
                "    differs: {} {}: legacy {} new {}\n",
                doc.id, f.field, f.legacy, f.new
            ));
        }
    }
    for u in &d.untransformable {
        out.push_str(&format!("    untransformable: {}: {}\n", u.id, u.reason));
    }
    if let Some(q) = &report.queries {
        out.push_str(&format!(
            "  queries ({}): {} run, {} equal, {} differ by analysis (by key and value: the legacy text field matched more), {} different{}\n",
            q.corpus, q.total, q.equal, q.analysis, q.different,
            if q.strict { " (analysis differences count: --strict-queries)" } else { "" }
        ));
        for o in q
            .differences
            .iter()
            .filter(|o| o.class == "different" || q.strict)
            .take(20)
        {
            out.push_str(&format!(
                "    {} {:?}{}: legacy {} hits, new {} (only legacy e.g. {:?}, only new e.g. {:?})\n",
                o.kind, o.query.value,
                o.query.key.as_deref().map(|k| format!(" in {k}")).unwrap_or_default(),
                o.legacy_hits, o.new_hits, o.only_legacy, o.only_new
            ));
        }
    }
    out
}
