//! The files in deploy/ keep up with the indexer: every metric the alert rules and the statsd
//! mapping name is one that README.md's Metrics table documents (tests/docs.rs ties that table to
//! the code), and the Kubernetes probes use the status endpoint's paths.

use std::collections::{BTreeMap, BTreeSet};

const README: &str = include_str!("../README.md");
const ALERTS: &str = include_str!("../deploy/prometheus/alerts.yml");
const MAPPING: &str = include_str!("../deploy/statsd-exporter/mapping.yml");
const DEPLOYMENT: &str = include_str!("../deploy/k8s/deployment.yaml");

/// The rows of README.md's Metrics table as (statsd name without prefix, type cell).
fn documented_metrics() -> Vec<(String, String)> {
    let section = README
        .split("\n## Metrics\n")
        .nth(1)
        .expect("README.md has a `## Metrics` section");
    let table = section.split("\n## ").next().unwrap_or(section);
    let mut metrics = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, kind) = (cells[1], cells[2]);
        for name in names.split('`').skip(1).step_by(2) {
            metrics.push((name.to_owned(), kind.to_owned()));
        }
    }
    assert!(
        metrics.len() > 10,
        "found only {} metrics in README.md's Metrics table",
        metrics.len()
    );
    metrics
}

/// The name deploy/statsd-exporter/mapping.yml gives a documented metric: dots become
/// underscores under the `dual_indexer_` prefix, and counters gain `_total`.
fn mapped_name(name: &str, kind: &str) -> String {
    let base = format!("dual_indexer_{}", name.replace('.', "_"));
    if kind.contains("counter") {
        format!("{base}_total")
    } else {
        base
    }
}

/// Every series name Prometheus can see for the documented metrics: a histogram (a statsd timer)
/// also has `_bucket`, `_sum` and `_count` series.
fn known_series() -> BTreeSet<String> {
    let mut known = BTreeSet::new();
    for (name, kind) in documented_metrics() {
        let mapped = mapped_name(&name, &kind);
        if kind.contains("timer") || kind.contains("histogram") {
            for suffix in ["_bucket", "_sum", "_count"] {
                known.insert(format!("{mapped}{suffix}"));
            }
        }
        known.insert(mapped);
    }
    known
}

/// Every `dual_indexer_…` name in a text.
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    text.match_indices("dual_indexer_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// The mapping's rules as statsd name (without prefix) → Prometheus name.
fn mapping_rules() -> BTreeMap<String, String> {
    let mut rules = BTreeMap::new();
    let mut matched: Option<&str> = None;
    for line in MAPPING.lines().map(str::trim) {
        if let Some(pattern) = line.strip_prefix("- match:") {
            matched = Some(pattern.trim());
        } else if let Some(name) = line.strip_prefix("name:") {
            let pattern = matched
                .take()
                .unwrap_or_else(|| panic!("mapping.yml has `{line}` without a `match:` before it"));
            let statsd = pattern.strip_prefix("dual_indexer.").unwrap_or_else(|| {
                panic!("mapping.yml matches `{pattern}`, which lacks the `dual_indexer.` prefix")
            });
            rules.insert(statsd.to_owned(), name.trim().to_owned());
        }
    }
    rules
}

#[test]
fn every_metric_in_the_alert_rules_is_documented() {
    let known = known_series();
    let referenced = referenced_metrics(ALERTS);
    assert!(
        referenced.len() > 5,
        "the scan found the metrics of deploy/prometheus/alerts.yml ({referenced:?})"
    );
    let unknown: Vec<&String> = referenced.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "deploy/prometheus/alerts.yml uses metrics that README.md's Metrics table does not list \
         (with the mapping's names: counters end in `_total`, histograms add `_bucket`, `_sum`, \
         `_count`): {unknown:?}"
    );
}

#[test]
fn the_mapping_names_every_documented_metric_and_nothing_else() {
    let rules = mapping_rules();
    let mut problems = Vec::new();
    for (name, kind) in documented_metrics() {
        let expected = mapped_name(&name, &kind);
        match rules.get(&name) {
            Some(mapped) if *mapped == expected => {}
            Some(mapped) => problems.push(format!(
                "`{name}` is mapped to {mapped}, expected {expected}"
            )),
            None => problems.push(format!("`{name}` has no mapping")),
        }
    }
    let documented: BTreeSet<String> = documented_metrics().into_iter().map(|(n, _)| n).collect();
    for name in rules.keys().filter(|n| !documented.contains(*n)) {
        problems.push(format!(
            "`{name}` is mapped but not in README.md's Metrics table"
        ));
    }
    assert!(
        problems.is_empty(),
        "deploy/statsd-exporter/mapping.yml and README.md's Metrics table disagree: {problems:#?}"
    );
    let unknown: Vec<String> = referenced_metrics(MAPPING)
        .difference(&known_series())
        .cloned()
        .collect();
    assert!(
        unknown.is_empty(),
        "deploy/statsd-exporter/mapping.yml names unknown metrics: {unknown:?}"
    );
}

/// The httpGet path of a probe of deploy/k8s/deployment.yaml.
fn probe_path(probe: &str) -> String {
    let heading = format!("{probe}:");
    let mut lines = DEPLOYMENT.lines().skip_while(|l| l.trim() != heading);
    assert!(
        lines.next().is_some(),
        "deploy/k8s/deployment.yaml has no {probe}"
    );
    lines
        .find_map(|l| l.trim().strip_prefix("path:"))
        .map(|path| path.trim().to_owned())
        .unwrap_or_else(|| panic!("the {probe} of deploy/k8s/deployment.yaml has no httpGet path"))
}

#[test]
fn the_kubernetes_probes_use_the_status_endpoints() {
    assert_eq!(probe_path("livenessProbe"), "/healthz", "livenessProbe");
    assert_eq!(probe_path("startupProbe"), "/healthz", "startupProbe");
    assert_eq!(probe_path("readinessProbe"), "/readyz", "readinessProbe");
}
