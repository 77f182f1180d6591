//! Versioned indices (`tags-v2-000001`, `tags-v2-000002`, …) and their bulk-load settings.
//!
//! A bulk replay runs faster with `refresh_interval: -1` and no replicas. An index created with
//! bulk-load settings records the settings to return to in its mapping's `_meta`, so whoever
//! restores them (`index restore`, or `cutover` on its way) restores what was meant, not a guess.

use std::time::Duration;

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde::Serialize;
use serde_json::{json, Value};

use super::alias;
use crate::es;

/// Digits of the generation suffix.
const GENERATION_DIGITS: usize = 6;

/// The name of the generation after the newest of `existing` that is `<prefix>-NNNNNN`.
pub fn next_name(prefix: &str, existing: &[String]) -> String {
    let newest = existing
        .iter()
        .filter_map(|name| name.strip_prefix(prefix)?.strip_prefix('-'))
        .filter(|n| n.len() == GENERATION_DIGITS && n.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    format!("{prefix}-{:0width$}", newest + 1, width = GENERATION_DIGITS)
}

/// The settings a bulk load changes, as one index has them now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadSettings {
    /// The concrete index.
    pub index: String,
    /// `index.refresh_interval` as set on the index (`None`: the cluster default).
    pub refresh_interval: Option<String>,
    /// `index.number_of_replicas`.
    pub replicas: Option<u64>,
    /// Whether the index is in bulk-load settings (refresh off or no replicas).
    pub bulk_load: bool,
    /// What a restore returns to, as recorded when bulk-load settings were applied.
    pub restore_to: Option<Value>,
}

impl LoadSettings {
    /// One line for people: `tags-v2-000001: refresh_interval -1, replicas 0 (BULK-LOAD …)`.
    pub fn describe(&self) -> String {
        format!(
            "index {}: refresh_interval {}, replicas {}{}",
            self.index,
            self.refresh_interval.as_deref().unwrap_or("default"),
            self.replicas.map_or("?".into(), |r| r.to_string()),
            if self.bulk_load {
                " — BULK-LOAD settings, restored before cutover"
            } else {
                ""
            }
        )
    }
}

/// The settings to return to after a bulk load.
pub fn restore_values(replicas: u64) -> Value {
    json!({"refresh_interval": null, "number_of_replicas": replicas})
}

/// What `create` did.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    /// The new index.
    pub index: String,
    /// The alias actions applied.
    pub alias_actions: Vec<Value>,
}

/// Options of [`create`].
#[derive(Debug, Clone)]
pub struct CreateOptions<'a> {
    /// Name prefix; the index is `<prefix>-NNNNNN`.
    pub prefix: &'a str,
    /// The index template document (`schemas/…`), whose `template` holds settings and mappings.
    pub template: &'a str,
    /// The write alias, moved to the new index as its write index.
    pub write_alias: &'a str,
    /// The read alias, added to the new index only if no index holds it yet.
    pub read_alias: &'a str,
    /// Start in bulk-load settings, recording `replicas` as what to restore.
    pub bulk_load: bool,
    /// Replicas once the index is in service.
    pub replicas: u64,
}

/// Creates the next generation of `<prefix>-NNNNNN` from the template and points the aliases at
/// it (the write alias moves in one atomic call; the read alias is only added when unheld, since
/// moving it is what `cutover` is for).
pub async fn create(
    client: &Elasticsearch,
    options: &CreateOptions<'_>,
) -> anyhow::Result<Created> {
    let existing = list(client, options.prefix).await?;
    let index = next_name(options.prefix, &existing);
    let template: Value = serde_json::from_str(options.template)?;
    let mut body = template["template"].clone();
    if options.bulk_load {
        body["settings"]["refresh_interval"] = json!("-1");
        body["settings"]["number_of_replicas"] = json!(0);
        body["mappings"]["_meta"]["dual_indexer"]["restore_settings"] =
            restore_values(options.replicas);
    } else {
        body["settings"]["number_of_replicas"] = json!(options.replicas);
    }
    es::request_ok(
        client,
        Method::Put,
        &format!("/{index}"),
        Some(&body),
        &format!("creating index `{index}`"),
    )
    .await?;
    let write = alias::read(client, options.write_alias).await?;
    let mut actions = alias::plan_restore(
        &write,
        &alias::AliasState {
            alias: options.write_alias.to_owned(),
            holders: [(index.clone(), json!({"is_write_index": true}))].into(),
        },
    );
    let read = alias::read(client, options.read_alias).await?;
    if read.holders.is_empty() {
        actions.extend(alias::plan_swap(&read, &index));
    }
    alias::apply(client, &actions).await?;
    Ok(Created {
        index,
        alias_actions: actions,
    })
}

/// The indices named `<prefix>-*`.
pub async fn list(client: &Elasticsearch, prefix: &str) -> anyhow::Result<Vec<String>> {
    let path = format!("/_cat/indices/{prefix}-*?format=json&h=index");
    let (status, reply) = es::request(client, Method::Get, &path, None).await?;
    match status {
        404 => Ok(Vec::new()),
        200..=299 => Ok(reply
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r["index"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()),
        _ => anyhow::bail!("listing `{prefix}-*` failed with HTTP {status}: {reply}"),
    }
}

/// The bulk-load settings of every index behind `name` (an index or an alias).
pub async fn load_settings(
    client: &Elasticsearch,
    name: &str,
) -> anyhow::Result<Vec<LoadSettings>> {
    let settings = es::request_ok(
        client,
        Method::Get,
        &format!("/{name}/_settings"),
        None,
        &format!("reading the settings of `{name}`"),
    )
    .await?;
    let mappings = es::request_ok(
        client,
        Method::Get,
        &format!("/{name}/_mapping"),
        None,
        &format!("reading the mapping of `{name}`"),
    )
    .await?;
    let mut out = Vec::new();
    for (index, entry) in settings.as_object().into_iter().flatten() {
        out.push(parse_load_settings(index, entry, &mappings[index]));
    }
    Ok(out)
}

fn parse_load_settings(index: &str, settings: &Value, mapping: &Value) -> LoadSettings {
    let s = &settings["settings"]["index"];
    let refresh_interval = s["refresh_interval"].as_str().map(str::to_owned);
    let replicas = match &s["number_of_replicas"] {
        Value::String(r) => r.parse().ok(),
        other => other.as_u64(),
    };
    let bulk_load = refresh_interval.as_deref() == Some("-1") || replicas == Some(0);
    let restore_to = mapping["mappings"]["_meta"]["dual_indexer"]["restore_settings"].clone();
    LoadSettings {
        index: index.to_owned(),
        refresh_interval,
        replicas,
        bulk_load,
        restore_to: (!restore_to.is_null()).then_some(restore_to),
    }
}

/// Puts an index into bulk-load settings, recording `replicas` as what a restore returns to.
pub async fn enter_bulk_load(
    client: &Elasticsearch,
    index: &str,
    replicas: u64,
) -> anyhow::Result<()> {
    es::update_meta(client, index, "recording the settings to restore", |meta| {
        meta["dual_indexer"]["restore_settings"] = restore_values(replicas);
    })
    .await?;
    put_settings(
        client,
        index,
        &json!({"refresh_interval": "-1", "number_of_replicas": 0}),
    )
    .await
}

/// Returns an index from bulk-load settings to the recorded ones (or to the default refresh and
/// `fallback_replicas` when none were recorded). Returns what it set, or `None` when the index was
/// not in bulk-load settings.
pub async fn restore(
    client: &Elasticsearch,
    current: &LoadSettings,
    fallback_replicas: u64,
) -> anyhow::Result<Option<Value>> {
    if !current.bulk_load {
        return Ok(None);
    }
    let values = current
        .restore_to
        .clone()
        .unwrap_or_else(|| restore_values(fallback_replicas));
    put_settings(client, &current.index, &values).await?;
    Ok(Some(values))
}

/// Changes index-level settings of `index` (`values` is the body's `index` object).
pub async fn put_settings(
    client: &Elasticsearch,
    index: &str,
    values: &Value,
) -> anyhow::Result<()> {
    let body = json!({ "index": values });
    es::request_ok(
        client,
        Method::Put,
        &format!("/{index}/_settings"),
        Some(&body),
        &format!("changing the settings of `{index}`"),
    )
    .await?;
    Ok(())
}

/// `index.gc_deletes` of `index` (or of the index behind an alias) when it is set; `None` means
/// Elasticsearch's default of 60 s.
pub async fn gc_deletes(client: &Elasticsearch, index: &str) -> anyhow::Result<Option<String>> {
    let reply = es::request_ok(
        client,
        Method::Get,
        &format!("/{index}/_settings?flat_settings=true"),
        None,
        &format!("reading the settings of `{index}`"),
    )
    .await?;
    Ok(reply
        .as_object()
        .and_then(|indices| indices.values().next())
        .and_then(|i| i["settings"]["index.gc_deletes"].as_str())
        .map(str::to_owned))
}

/// Elasticsearch's default `index.gc_deletes`.
pub const DEFAULT_GC_DELETES: Duration = Duration::from_secs(60);

/// Reads an Elasticsearch time value (`500ms`, `60s`, `5m`, `12h`, `2d`; a bare number is
/// milliseconds).
pub fn parse_time_value(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let millis = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    Some(Duration::from_millis(n.checked_mul(millis)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_values_read_as_elasticsearch_writes_them() {
        assert_eq!(parse_time_value("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_time_value("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_time_value("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_time_value("2d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_time_value("1500"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_time_value("1.5h"), None);
        assert_eq!(parse_time_value("soon"), None);
    }

    #[test]
    fn generations_count_up_from_the_newest() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(next_name("tags-v2", &[]), "tags-v2-000001");
        assert_eq!(
            next_name(
                "tags-v2",
                &names(&["tags-v2-000001", "tags-v2-000007", "tags-v2-000003"])
            ),
            "tags-v2-000008"
        );
        // Other names that share the prefix are not generations.
        assert_eq!(
            next_name(
                "tags-v2",
                &names(&[
                    "tags-v2-old",
                    "tags-v2-0000001",
                    "tags-v2-000002-x",
                    "tags-v20-000009"
                ])
            ),
            "tags-v2-000001"
        );
    }

    #[test]
    fn bulk_load_settings_are_recognised_and_their_restore_is_read() {
        let settings =
            json!({"settings": {"index": {"refresh_interval": "-1", "number_of_replicas": "0"}}});
        let mapping = json!({"mappings": {"_meta": {"dual_indexer": {"restore_settings": restore_values(2)}}}});
        let parsed = parse_load_settings("i-000001", &settings, &mapping);
        assert!(parsed.bulk_load);
        assert_eq!(parsed.replicas, Some(0));
        assert_eq!(parsed.restore_to, Some(restore_values(2)));
        assert!(parsed.describe().contains("BULK-LOAD"));

        let normal = json!({"settings": {"index": {"number_of_replicas": "1"}}});
        let parsed = parse_load_settings("i-000001", &normal, &Value::Null);
        assert!(!parsed.bulk_load);
        assert_eq!(parsed.restore_to, None);
        assert_eq!(
            parsed.describe(),
            "index i-000001: refresh_interval default, replicas 1"
        );
    }
}
