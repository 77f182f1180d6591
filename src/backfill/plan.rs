//! Planning a new backfill: count the legacy index and split it into id slices.

use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::json;

use super::checkpoint::{self, ChangedSettings, Checkpoint};
use super::BackfillSettings;
use crate::es;
use crate::files::unix_now;
use crate::secrets::redact_url;

/// Counts the legacy index, splits it into slices and writes the first checkpoint.
pub(super) async fn plan(
    settings: &BackfillSettings,
    legacy: &Elasticsearch,
) -> anyhow::Result<Checkpoint> {
    let total = es::count(legacy, &settings.from_index).await?;
    let sample = sample_ids(legacy, &settings.from_index, settings.slices).await?;
    let slices = checkpoint::plan(sample, settings.slices);
    if slices.len() < settings.slices {
        tracing::info!(
            asked = settings.slices,
            planned = slices.len(),
            total,
            "fewer slices than asked: the legacy index has too few distinct ids"
        );
    }
    let checkpoint = Checkpoint {
        format: checkpoint::FORMAT,
        from_url: redact_url(&settings.from_url),
        from_index: settings.from_index.clone(),
        to_url: redact_url(&settings.to_url),
        to_index: settings.to_index.clone(),
        versions: settings.versions,
        started_at: unix_now(),
        finished_at: None,
        total_at_start: total,
        changed_settings: ChangedSettings::default(),
        slices,
    };
    checkpoint.write(&settings.checkpoint)?;
    tracing::info!(total, slices = checkpoint.slices.len(), checkpoint = %settings.checkpoint.display(), "backfill planned");
    Ok(checkpoint)
}

/// A random sample of ids, large enough to split the index into `slices` even parts.
async fn sample_ids(
    client: &Elasticsearch,
    index: &str,
    slices: usize,
) -> anyhow::Result<Vec<String>> {
    let body = json!({
        "size": (slices * 200).min(10_000),
        "_source": false,
        "query": {"function_score": {"query": {"match_all": {}}, "random_score": {"seed": 7, "field": "_seq_no"}}}
    });
    let reply = es::request_ok(
        client,
        Method::Post,
        &format!("/{index}/_search"),
        Some(&body),
        &format!("sampling the ids of `{index}`"),
    )
    .await?;
    Ok(reply["hits"]["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["_id"].as_str().map(str::to_owned))
        .collect())
}
