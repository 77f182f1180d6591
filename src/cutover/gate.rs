//! The cutover gate: may the read alias move to the new index now?
//!
//! It holds when both are true:
//! - the new indexer's group is CAUGHT_UP, judged over a full lag window;
//! - the newest `verify` report is clean, recent, and about the index being cut over to;
//! - with `--shadow-report`: the `shadow` proxy compared enough of the application's real
//!   searches, some of them in the last window, and none of those was `different`.
//!
//! Clean means no `different` and no `unsettled` difference: differences a live verify settled
//! as lag are counted in the report and never refuse the cutover.
//!
//! The decision is a pure function of those facts, so each refusal is unit-tested.

use serde::Deserialize;

use crate::lag::rule::Status;

/// The newest verify report schema the gate reads ([`crate::verify::SCHEMA_VERSION`]).
const NEWEST_SCHEMA: u32 = crate::verify::SCHEMA_VERSION;

/// What the gate reads from a `verify --report` file.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyVerdict {
    /// The report's schema version; reports from before settling carry none (1).
    #[serde(default = "first_schema")]
    pub schema_version: u32,
    /// No `different` and no `unsettled` difference.
    pub clean: bool,
    /// The document check, as far as the gate names its failures.
    #[serde(default)]
    pub documents: VerifiedDocuments,
    /// When the check finished, in Unix seconds.
    pub finished_at: u64,
    /// The new side of the comparison.
    pub new: VerifiedSide,
}

fn first_schema() -> u32 {
    1
}

/// The document check of a verify report, as the gate needs it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VerifiedDocuments {
    /// Differences no settle round could judge (schema 2 on).
    #[serde(default)]
    pub unsettled: VerifiedCount,
}

/// A count in a verify report.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VerifiedCount {
    /// How many.
    pub count: u64,
}

/// One side of a verify report, as the gate needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifiedSide {
    /// The concrete indices the name resolved to when the check ran.
    pub indices: Vec<String>,
}

/// Everything the gate decides on.
#[derive(Debug, Clone)]
pub struct GateFacts {
    /// The group's lag status over the window, if it could be judged.
    pub lag: Option<Status>,
    /// The verify report, or why it could not be read.
    pub report: Result<VerifyVerdict, String>,
    /// The concrete index the alias is to move to.
    pub target: String,
    /// Now, in Unix seconds.
    pub now: u64,
    /// The oldest report age accepted, in seconds.
    pub max_report_age: u64,
    /// The shadow report's counts, when the gate asks for it.
    pub shadow: Option<ShadowFacts>,
}

/// What the gate reads from a `shadow` report.
#[derive(Debug, Clone)]
pub struct ShadowFacts {
    /// The report's counts, or why it could not be read.
    pub summary: Result<crate::shadow::report::Summary, String>,
    /// Compared searches needed, over the whole report.
    pub min_compared: u64,
    /// The last window, in seconds, for the statement "no `different`".
    pub window_secs: u64,
}

/// The reasons the gate refuses; empty when it holds.
pub fn refusals(facts: &GateFacts) -> Vec<String> {
    let mut reasons = Vec::new();
    match facts.lag {
        Some(Status::CaughtUp) => {}
        Some(other) => reasons.push(format!(
            "the replay is {other}, not CAUGHT_UP over the whole lag window"
        )),
        None => reasons.push("the replay's lag could not be judged".into()),
    }
    match &facts.report {
        Err(why) => reasons.push(format!("no usable verify report: {why}")),
        Ok(report) if report.schema_version > NEWEST_SCHEMA => reasons.push(format!(
            "the last verify report has schema version {}, newer than this dual-indexer reads ({NEWEST_SCHEMA}); cut over with the dual-indexer that wrote it",
            report.schema_version
        )),
        Ok(report) => {
            let unsettled = report.documents.unsettled.count;
            if unsettled > 0 {
                reasons.push(format!(
                    "the last verify report left {unsettled} difference(s) unsettled: a consumer group did not get past them in time (see its unsettled examples)"
                ));
            }
            if !report.clean && unsettled == 0 {
                reasons.push("the last verify report found differences".into());
            }
            if !report.new.indices.iter().any(|i| i == &facts.target) {
                reasons.push(format!(
                    "the last verify report checked {:?}, not `{}`",
                    report.new.indices, facts.target
                ));
            }
            let age = facts.now.saturating_sub(report.finished_at);
            if age > facts.max_report_age {
                reasons.push(format!(
                    "the last verify report is {age}s old (at most {}s accepted)",
                    facts.max_report_age
                ));
            }
        }
    }
    if let Some(shadow) = &facts.shadow {
        shadow_refusals(shadow, &mut reasons);
    }
    reasons
}

fn shadow_refusals(shadow: &ShadowFacts, reasons: &mut Vec<String>) {
    let summary = match &shadow.summary {
        Ok(summary) => summary,
        Err(why) => return reasons.push(format!("no usable shadow report: {why}")),
    };
    if summary.compared < shadow.min_compared {
        reasons.push(format!(
            "the shadow report compared {} searches, fewer than the {} required",
            summary.compared, shadow.min_compared
        ));
    }
    if summary.compared_in_window == 0 {
        reasons.push(format!(
            "the shadow report compared no search in the last {}s: is the proxy still running?",
            shadow.window_secs
        ));
    }
    if summary.different_in_window > 0 {
        reasons.push(format!(
            "the shadow report has {} `different` answers in the last {}s",
            summary.different_in_window, shadow.window_secs
        ));
    }
}

/// Reads a verify report for the gate.
pub fn read_report(path: &std::path::Path) -> Result<VerifyVerdict, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a verify report: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> GateFacts {
        GateFacts {
            lag: Some(Status::CaughtUp),
            report: Ok(VerifyVerdict {
                schema_version: NEWEST_SCHEMA,
                documents: VerifiedDocuments::default(),
                clean: true,
                finished_at: 1_000,
                new: VerifiedSide {
                    indices: vec!["tags-v2-000001".into()],
                },
            }),
            target: "tags-v2-000001".into(),
            now: 1_100,
            max_report_age: 3_600,
            shadow: None,
        }
    }

    #[test]
    fn caught_up_and_a_clean_recent_report_for_the_target_pass() {
        assert!(refusals(&facts()).is_empty());
    }

    #[test]
    fn each_failed_condition_is_named() {
        let mut f = facts();
        f.lag = Some(Status::CatchingUp);
        assert_eq!(refusals(&f).len(), 1);
        assert!(refusals(&f)[0].contains("CATCHING_UP"));

        let mut f = facts();
        f.lag = None;
        assert!(refusals(&f)[0].contains("could not be judged"));

        let mut f = facts();
        f.report = Err("reading verify-report.json: not found".into());
        assert!(refusals(&f)[0].contains("no usable verify report"));

        let mut f = facts();
        if let Ok(r) = &mut f.report {
            r.clean = false;
        }
        assert_eq!(
            refusals(&f),
            vec!["the last verify report found differences"]
        );

        let mut f = facts();
        f.target = "tags-v2-000002".into();
        assert!(refusals(&f)[0].contains("not `tags-v2-000002`"));

        let mut f = facts();
        f.now = 1_000 + 3_601;
        assert!(refusals(&f)[0].contains("3601s old"));
    }

    #[test]
    fn unsettled_differences_refuse_with_their_own_reason() {
        let mut f = facts();
        if let Ok(r) = &mut f.report {
            r.clean = false;
            r.documents.unsettled.count = 3;
        }
        let reasons = refusals(&f);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].contains("3 difference(s) unsettled"),
            "{reasons:?}"
        );
    }

    #[test]
    fn a_report_from_a_newer_schema_is_refused_and_an_old_one_read() {
        let mut f = facts();
        if let Ok(r) = &mut f.report {
            r.schema_version = NEWEST_SCHEMA + 1;
        }
        assert!(refusals(&f)[0].contains("newer than this dual-indexer reads"));
        let old: VerifyVerdict =
            serde_json::from_str(r#"{"clean": true, "finished_at": 5, "new": {"indices": ["i"]}}"#)
                .unwrap();
        assert_eq!((old.schema_version, old.clean), (1, true));
    }

    #[test]
    fn the_shadow_report_needs_enough_comparisons_and_no_recent_difference() {
        use crate::shadow::report::Summary;
        let with = |compared, compared_in_window, different_in_window| {
            let mut f = facts();
            f.shadow = Some(ShadowFacts {
                summary: Ok(Summary {
                    compared,
                    compared_in_window,
                    different_in_window,
                }),
                min_compared: 1_000,
                window_secs: 3_600,
            });
            refusals(&f)
        };
        assert!(with(1_000, 10, 0).is_empty());
        assert_eq!(
            with(999, 10, 0),
            vec!["the shadow report compared 999 searches, fewer than the 1000 required"]
        );
        assert_eq!(
            with(5_000, 10, 2),
            vec!["the shadow report has 2 `different` answers in the last 3600s"]
        );
        assert!(with(5_000, 0, 0)[0].contains("no search in the last 3600s"));
        let mut f = facts();
        f.shadow = Some(ShadowFacts {
            summary: Err("cannot read the shadow report x: not found".into()),
            min_compared: 1,
            window_secs: 1,
        });
        assert!(refusals(&f)[0].starts_with("no usable shadow report"));
    }

    #[test]
    fn every_reason_is_reported_at_once() {
        let mut f = facts();
        f.lag = Some(Status::Stalled);
        if let Ok(r) = &mut f.report {
            r.clean = false;
        }
        f.now = 100_000;
        assert_eq!(refusals(&f).len(), 3);
    }
}
