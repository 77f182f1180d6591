//! Connecting to an Elasticsearch cluster and preparing its indices.
//!
//! The index mappings live in `schemas/` and are compiled in from there, so the service, its
//! tests and its documentation all read the same file.

use std::time::Duration;

use elasticsearch::http::headers::HeaderMap;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde_json::Value;

/// The new cluster's index template (`schemas/new-index-template.json`).
pub const NEW_INDEX_TEMPLATE: &str = include_str!("../schemas/new-index-template.json");

/// The legacy cluster's index template (`schemas/legacy-index-template.json`), for the reference
/// legacy indexer (`run --schema legacy`).
pub const LEGACY_INDEX_TEMPLATE: &str = include_str!("../schemas/legacy-index-template.json");

/// Builds a client for one cluster.
pub fn client(url: &str, timeout: Duration) -> anyhow::Result<Elasticsearch> {
    let parsed = url::Url::parse(url)
        .map_err(|e| anyhow::anyhow!("`{url}` is not a valid Elasticsearch URL: {e}"))?;
    let transport = TransportBuilder::new(SingleNodeConnectionPool::new(parsed))
        .timeout(timeout)
        .build()
        .map_err(|e| anyhow::anyhow!("building the Elasticsearch client for {url}: {e}"))?;
    Ok(Elasticsearch::new(transport))
}

/// Sends a JSON request and returns the status and parsed body (`Null` for an empty body).
pub async fn request(
    client: &Elasticsearch,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let bytes = body.map(serde_json::to_vec).transpose()?;
    let response = client
        .send(
            method,
            path,
            HeaderMap::new(),
            None::<&()>,
            bytes.as_deref(),
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let status = response.status_code().as_u16();
    let text = response.text().await?;
    let value = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok((status, value))
}

/// Like [`request`], but only a 2xx answer is a success: anything else is the error
/// "`what` failed with HTTP <status>: <body>".
pub async fn request_ok(
    client: &Elasticsearch,
    method: Method,
    path: &str,
    body: Option<&Value>,
    what: &str,
) -> anyhow::Result<Value> {
    let (status, reply) = request(client, method, path, body).await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "{what} failed with HTTP {status}: {reply}"
    );
    Ok(reply)
}

/// Creates `index` with the settings and mappings of `template` unless an index or alias of that
/// name exists. Returns whether it created it.
pub async fn ensure_index(
    client: &Elasticsearch,
    index: &str,
    template: &str,
) -> anyhow::Result<bool> {
    let (status, _) = request(client, Method::Head, &format!("/{index}"), None).await?;
    if status == 200 {
        return Ok(false);
    }
    let template: Value = serde_json::from_str(template)?;
    let body = &template["template"];
    let (status, reply) = request(client, Method::Put, &format!("/{index}"), Some(body)).await?;
    match status {
        200..=299 => Ok(true),
        400 if reply.to_string().contains("already_exists") => Ok(false),
        _ => anyhow::bail!("creating index `{index}` failed with HTTP {status}: {reply}"),
    }
}

/// Makes recent writes visible to search (real Elasticsearch needs this; the stand-in does not).
pub async fn refresh(client: &Elasticsearch, index: &str) -> anyhow::Result<()> {
    request_ok(
        client,
        Method::Post,
        &format!("/{index}/_refresh"),
        None,
        &format!("refreshing `{index}`"),
    )
    .await?;
    Ok(())
}

/// Counts the documents in `index`.
pub async fn count(client: &Elasticsearch, index: &str) -> anyhow::Result<u64> {
    let reply = request_ok(
        client,
        Method::Get,
        &format!("/{index}/_count"),
        None,
        &format!("counting `{index}`"),
    )
    .await?;
    reply["count"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("`{index}/_count` answered without a count: {reply}"))
}

/// One document of a page read in `_id` order.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The document `_id`.
    pub id: String,
    /// The document's `_version`, when it was asked for.
    pub version: Option<u64>,
    /// The document `_source`.
    pub source: Value,
}

/// Reads up to `size` documents of `index` whose `_id` sorts after `after` (all of them when
/// `None`), in `_id` order: the byte order of the ids' UTF-8, which is also Rust's `str` order.
/// Paging with `search_after` on the unique `_id` never skips a document that exists for the
/// whole read, whatever is written meanwhile.
pub async fn page_by_id(
    client: &Elasticsearch,
    index: &str,
    after: Option<&str>,
    size: usize,
    with_version: bool,
) -> anyhow::Result<Vec<Hit>> {
    let mut body = serde_json::json!({
        "size": size,
        "sort": [{"_id": "asc"}],
        "query": {"match_all": {}},
        "track_total_hits": false,
        "version": with_version,
    });
    if let Some(last) = after {
        body["search_after"] = serde_json::json!([last]);
    }
    let (status, mut reply) = request(
        client,
        Method::Post,
        &format!("/{index}/_search"),
        Some(&body),
    )
    .await?;
    anyhow::ensure!(
        (200..300).contains(&status),
        "reading `{index}` in _id order failed with HTTP {status}: {reply} (on Elasticsearch 8 and later, sorting on _id needs the cluster setting indices.id_field_data.enabled: true)"
    );
    let Value::Array(hits) = reply["hits"]["hits"].take() else {
        anyhow::bail!("`{index}/_search` answered without hits: {reply}");
    };
    Ok(hits
        .into_iter()
        .filter_map(|mut h| {
            Some(Hit {
                id: h["_id"].as_str()?.to_owned(),
                version: h["_version"].as_u64(),
                source: h["_source"].take(),
            })
        })
        .collect())
}
