//! Sampling a group's lag from Kafka and keeping one [`PartitionWindow`] per partition.
//!
//! The monitor asks for watermarks and committed offsets on each [`LagMonitor::sample`], through
//! one client per group it watches: ours and, optionally, the legacy indexer's. Inside `run`, our
//! group's client is the replay's own consumer ([`LagMonitor::sharing`]): every librdkafka
//! client keeps its threads waking several times a second, and a second one for the same group
//! doubled that cost of an idle `run`. Those calls block, so callers in async code run them on
//! the blocking pool.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use serde::Serialize;

use super::rule::{Judgement, LagRule, PartitionWindow, Sample, Status};
use crate::source::group::{self, committed};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

/// The calls a sample makes for one group: the topic's partitions, the group's committed
/// offsets and a partition's watermarks. Blocking.
pub trait OffsetsClient: Send {
    /// The partition ids of `topic` (none if it does not exist).
    fn partitions(&self, topic: &str) -> anyhow::Result<Vec<i32>>;
    /// The group's committed offset for each of `partitions` (`None` where it has none).
    fn committed(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> anyhow::Result<BTreeMap<i32, Option<i64>>>;
    /// The low and high watermarks of one partition.
    fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)>;
}

/// What an [`OffsetsClient`] lent by the replay returns once the replay has closed its consumer:
/// the monitor then stops, as the run is ending.
#[derive(Debug, thiserror::Error)]
#[error("the replay's consumer has closed")]
pub struct ClientClosed;

/// A client of its own, from [`group::offsets_client`]: it reads the group's offsets without
/// joining the group.
impl OffsetsClient for BaseConsumer {
    fn partitions(&self, topic: &str) -> anyhow::Result<Vec<i32>> {
        Ok(crate::source::topics::partition_ids(self, topic, TIMEOUT)?)
    }

    fn committed(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> anyhow::Result<BTreeMap<i32, Option<i64>>> {
        committed(self, topic, partitions, TIMEOUT)
    }

    fn watermarks(&self, topic: &str, partition: i32) -> anyhow::Result<(i64, i64)> {
        Ok(self.fetch_watermarks(topic, partition, TIMEOUT)?)
    }
}

/// One partition's row in a report: its offsets and what the rule says about it.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionRow {
    /// Partition number.
    pub partition: i32,
    /// High watermark.
    pub high: i64,
    /// Our group's committed offset (`None`: nothing committed).
    pub committed: Option<i64>,
    /// The legacy group's committed offset, when one is watched.
    pub legacy_committed: Option<i64>,
    /// Lag, gap, rates, ETA, commit age and status.
    #[serde(flatten)]
    pub judgement: Judgement,
}

/// A group's lag on one topic.
#[derive(Debug, Clone, Serialize)]
pub struct LagReport {
    /// The group.
    pub group: String,
    /// The legacy group, when one is watched.
    pub legacy_group: Option<String>,
    /// The topic.
    pub topic: String,
    /// The group's status: its worst partition's.
    pub status: String,
    /// Total offset lag.
    pub total_lag: i64,
    /// Total gap to the legacy group.
    pub total_gap_to_legacy: Option<i64>,
    /// Total consume rate.
    pub consume_rate: f64,
    /// Seconds until the whole lag closes at the current rates, if it is closing.
    pub eta_secs: Option<f64>,
    /// Group membership as far as the broker tells it.
    pub membership: String,
    /// One row per partition.
    pub partitions: Vec<PartitionRow>,
    #[serde(skip)]
    status_value: Option<Status>,
}

impl LagReport {
    /// The group's status, if any partition has been judged.
    pub fn status(&self) -> Option<Status> {
        self.status_value
    }
}

/// Watches one group (and optionally the legacy group) on one topic.
pub struct LagMonitor {
    topic: String,
    group: String,
    legacy_group: Option<String>,
    ours: Box<dyn OffsetsClient>,
    legacy: Option<BaseConsumer>,
    rule: LagRule,
    windows: BTreeMap<i32, PartitionWindow>,
    started: Instant,
    last_status: Option<Status>,
}

impl LagMonitor {
    /// Connects a monitor for `group` (and `legacy_group`) on `topic`.
    pub fn new(
        config: &ClientConfig,
        topic: &str,
        group: &str,
        legacy_group: Option<&str>,
        rule: LagRule,
    ) -> anyhow::Result<Self> {
        let ours = Box::new(group::offsets_client(config, group)?);
        Self::sharing(ours, config, topic, group, legacy_group, rule)
    }

    /// A monitor that reads `group`'s offsets through `ours` (the replay's consumer, in `run`),
    /// and connects a client of its own only for `legacy_group`.
    pub fn sharing(
        ours: Box<dyn OffsetsClient>,
        config: &ClientConfig,
        topic: &str,
        group: &str,
        legacy_group: Option<&str>,
        rule: LagRule,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            topic: topic.to_owned(),
            group: group.to_owned(),
            legacy_group: legacy_group.map(str::to_owned),
            ours,
            legacy: legacy_group
                .map(|g| group::offsets_client(config, g))
                .transpose()?,
            rule,
            windows: BTreeMap::new(),
            started: Instant::now(),
            last_status: None,
        })
    }

    /// Takes one sample of every partition and judges them. Blocking.
    pub fn sample(&mut self) -> anyhow::Result<LagReport> {
        let partitions = self.ours.partitions(&self.topic)?;
        anyhow::ensure!(
            !partitions.is_empty(),
            "topic `{}` does not exist or has no partitions",
            self.topic
        );
        let ours = self.ours.committed(&self.topic, &partitions)?;
        let legacy = match &self.legacy {
            Some(c) => Some(committed(c, &self.topic, &partitions, TIMEOUT)?),
            None => None,
        };
        let at = self.started.elapsed().as_secs_f64();
        let mut rows = Vec::with_capacity(partitions.len());
        let mut judgements = Vec::with_capacity(partitions.len());
        for p in partitions {
            let (low, high) = self.ours.watermarks(&self.topic, p)?;
            let committed = ours.get(&p).copied().flatten();
            let legacy_committed = legacy.as_ref().and_then(|l| l.get(&p).copied().flatten());
            let sample = Sample {
                at,
                high,
                committed: committed.unwrap_or(low).max(low),
                legacy_committed,
            };
            // Membership cannot be read from every broker; None means "unknown", never "stopped".
            let judgement = self
                .windows
                .entry(p)
                .or_default()
                .observe(sample, &self.rule, None);
            rows.push(PartitionRow {
                partition: p,
                high,
                committed,
                legacy_committed,
                judgement,
            });
            judgements.push(judgement);
        }
        let status = Status::worst(judgements.iter().map(|j| j.status));
        if status != self.last_status {
            if let Some(s) = status {
                tracing::info!(group = %self.group, topic = %self.topic, status = %s, "lag status changed");
            }
            self.last_status = status;
        }
        let total_lag: i64 = judgements.iter().map(|j| j.lag).sum();
        let closing: f64 = judgements
            .iter()
            .map(|j| j.consume_rate - j.produce_rate)
            .sum();
        Ok(LagReport {
            group: self.group.clone(),
            legacy_group: self.legacy_group.clone(),
            topic: self.topic.clone(),
            status: status.map_or("UNKNOWN".into(), |s| s.to_string()),
            total_lag,
            // Absent unless some partition has a gap: a legacy group that never committed is
            // "unknown", not "0 behind".
            total_gap_to_legacy: judgements
                .iter()
                .filter_map(|j| j.gap_to_legacy)
                .reduce(|a, b| a + b),
            consume_rate: judgements.iter().map(|j| j.consume_rate).sum(),
            eta_secs: if total_lag == 0 {
                Some(0.0)
            } else if closing > 1e-9 {
                Some(total_lag as f64 / closing)
            } else {
                None
            },
            membership: "unknown (not read)".into(),
            partitions: rows,
            status_value: status,
        })
    }
}

/// `lag.status` before any partition has been judged.
pub const STATUS_UNKNOWN: u8 = 9;

/// Exports a report as statsd gauges (`lag.*`), per partition and in total.
pub fn export(report: &LagReport) {
    for row in &report.partitions {
        let labels = [
            ("group", report.group.clone()),
            ("topic", report.topic.clone()),
            ("partition", row.partition.to_string()),
        ];
        let j = &row.judgement;
        metrics::gauge!("lag.offsets", &labels).set(j.lag as f64);
        metrics::gauge!("lag.consume_rate", &labels).set(j.consume_rate);
        // statsd reads a leading `-` on a gauge as "subtract", so no gauge here is ever negative.
        metrics::gauge!("lag.closing", &labels).set(if j.eta_secs.is_some() { 1.0 } else { 0.0 });
        if let Some(eta) = j.eta_secs {
            metrics::gauge!("lag.eta_secs", &labels).set(eta.max(0.0));
        }
        metrics::gauge!("lag.commit_age_secs", &labels).set(j.commit_age_secs);
        if let Some(gap) = j.gap_to_legacy {
            metrics::gauge!("lag.gap_to_legacy", &labels).set(gap.max(0) as f64);
        }
    }
    let labels = [
        ("group", report.group.clone()),
        ("topic", report.topic.clone()),
    ];
    metrics::gauge!("lag.total_offsets", &labels).set(report.total_lag as f64);
    metrics::gauge!("lag.status", &labels).set(f64::from(
        report.status().map_or(STATUS_UNKNOWN, |s| s.code()),
    ));
    if let Some(gap) = report.total_gap_to_legacy {
        metrics::gauge!("lag.total_gap_to_legacy", &labels).set(gap.max(0) as f64);
    }
}

/// A human-readable table of a report.
pub fn render_table(report: &LagReport) -> String {
    let mut out = format!(
        "group {} on {}: {} — lag {}{}, {:.0} msg/s, ETA {}\n",
        report.group,
        report.topic,
        report.status,
        report.total_lag,
        report
            .total_gap_to_legacy
            .map(|g| format!(
                ", {g} behind {}",
                report.legacy_group.as_deref().unwrap_or("legacy")
            ))
            .unwrap_or_default(),
        report.consume_rate,
        eta_text(report.eta_secs),
    );
    out.push_str("PARTITION        HIGH   COMMITTED         LAG   GAP-TO-LEGACY    RATE/S   ETA        STATUS\n");
    for r in &report.partitions {
        out.push_str(&format!(
            "{:>9} {:>11} {:>11} {:>11} {:>15} {:>9.0}   {:<10} {}\n",
            r.partition,
            r.high,
            r.committed.map_or("-".into(), |c| c.to_string()),
            r.judgement.lag,
            r.judgement
                .gap_to_legacy
                .map_or("-".into(), |g| g.to_string()),
            r.judgement.consume_rate,
            eta_text(r.judgement.eta_secs),
            r.judgement.status
        ));
    }
    out
}

fn eta_text(eta: Option<f64>) -> String {
    match eta {
        Some(s) if s < 1.0 => "now".into(),
        Some(s) if s < 120.0 => format!("{s:.0}s"),
        Some(s) if s < 7_200.0 => format!("{:.0}m", s / 60.0),
        Some(s) => format!("{:.1}h", s / 3_600.0),
        None => "never".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_reads_like_a_person_would_say_it() {
        assert_eq!(eta_text(Some(0.2)), "now");
        assert_eq!(eta_text(Some(42.0)), "42s");
        assert_eq!(eta_text(Some(600.0)), "10m");
        assert_eq!(eta_text(Some(36_000.0)), "10.0h");
        assert_eq!(eta_text(None), "never");
    }
}
