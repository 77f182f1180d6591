//! Sending one batch until every item in it has a final outcome.
//!
//! [`BulkSink::deliver`] owns a batch for its whole life. Whole-request failures (no response,
//! 408, 429, 5xx) are retried with backoff for as long as it takes: an outage must end in the same
//! documents as a clean run, so it holds the batch, which in turn holds back the offset commits
//! and, through the pipeline's budget, pauses consumption. Item-level retries are bounded by
//! [`RetryPolicy::max_attempts`], after which the item is dead-lettered with its last error.

use std::cell::Cell;
use std::time::{Duration, Instant};

use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use serde::Deserialize;

use super::request::{Batch, BatchItem, OpKind, Original};
use super::retry::{backoff, classify_item, classify_request, ItemDecision, RequestDecision};
use crate::source::offsets::Ticket;

/// How retries are paced and bounded.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per item (first send included) before a retryable item is dead-lettered.
    pub max_attempts: u32,
    /// Backoff before the first retry.
    pub base: Duration,
    /// Ceiling of one backoff.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

/// The final outcome of one item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Indexed or deleted.
    Applied(OpKind),
    /// A newer or equal version was already there (409).
    AlreadyApplied,
    /// Refused for good; goes to the dead-letter topic.
    DeadLetter {
        /// `mapping` for a 4xx refusal, `retries_exhausted` after the retry bound.
        class: &'static str,
        /// Elasticsearch's error type and reason, or the transport error.
        reason: String,
        /// Elasticsearch's error type, when there is one.
        es_type: Option<String>,
        /// Attempts made.
        attempts: u32,
        /// The message, byte for byte.
        original: Original,
    },
}

/// An error that retrying cannot fix: the pipeline stops and commits nothing past it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

/// Sends batches to one index of one cluster.
#[derive(Clone)]
pub struct BulkSink {
    client: Elasticsearch,
    path: String,
    index: String,
    policy: RetryPolicy,
    timeout: Duration,
}

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    #[serde(default)]
    items: Vec<ItemEnvelope>,
}

#[derive(Deserialize)]
struct ItemEnvelope {
    #[serde(alias = "index", alias = "create", alias = "update", alias = "delete")]
    result: ItemResult,
}

#[derive(Deserialize)]
struct ItemResult {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    reason: Option<String>,
}

enum Attempt {
    Items(Vec<ItemResult>),
    AllApplied,
    Failed { status: Option<u16>, detail: String },
}

impl BulkSink {
    /// A sink writing to `index` (an index or a write alias) through `client`.
    pub fn new(client: Elasticsearch, index: &str, policy: RetryPolicy, timeout: Duration) -> Self {
        Self {
            client,
            path: format!("/{index}/_bulk"),
            index: index.to_owned(),
            policy,
            timeout,
        }
    }

    /// The target index or alias.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// Sends `batch` until every item is applied, already applied or to be dead-lettered, and
    /// returns each item's ticket with its final outcome.
    pub async fn deliver(&self, batch: Batch) -> Result<Vec<(Ticket, ItemOutcome)>, Fatal> {
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut queue = vec![batch];
        let mut request_failures = 0u32;
        while let Some(mut batch) = queue.pop() {
            for item in &mut batch.items {
                item.attempts += 1;
            }
            let started = Instant::now();
            let attempt = self.send(&batch.body).await;
            metrics::histogram!("bulk.latency_ms").record(started.elapsed().as_secs_f64() * 1e3);
            let results = match attempt {
                Attempt::AllApplied => {
                    metrics::counter!("bulk.requests", "result" => "ok").increment(1);
                    request_failures = 0;
                    outcomes.extend(batch.items.iter().map(|i| (i.ticket, ItemOutcome::Applied(i.op))));
                    continue;
                }
                Attempt::Items(results) if results.len() == batch.len() => results,
                Attempt::Items(results) => {
                    return Err(Fatal(format!(
                        "bulk response to {} has {} items for a request of {}; refusing to guess which is which",
                        self.index,
                        results.len(),
                        batch.len()
                    )))
                }
                Attempt::Failed { status, detail } => {
                    // A request that never got item answers does not count against its items.
                    for item in &mut batch.items {
                        item.attempts -= 1;
                    }
                    match classify_request(status) {
                        RequestDecision::Retry => {
                            metrics::counter!("bulk.requests", "result" => "retry").increment(1);
                            let wait = backoff(request_failures, self.policy.base, self.policy.max, jitter());
                            tracing::warn!(index = %self.index, docs = batch.len(), status, %detail, retry_in_ms = wait.as_millis() as u64, "bulk request failed; retrying the whole request");
                            request_failures = request_failures.saturating_add(1);
                            tokio::time::sleep(wait).await;
                            queue.push(batch);
                        }
                        RequestDecision::Split if batch.len() > 1 => {
                            let mut first = batch.items.clone();
                            let second = first.split_off(first.len() / 2);
                            queue.push(batch.subset(second));
                            queue.push(batch.subset(first));
                        }
                        RequestDecision::Split => {
                            let item = &batch.items[0];
                            outcomes.push((item.ticket, ItemOutcome::DeadLetter {
                                class: "mapping",
                                reason: format!("the document alone is too large for one bulk request (HTTP 413): {detail}"),
                                es_type: None,
                                attempts: item.attempts + 1,
                                original: batch.original(item),
                            }));
                        }
                        RequestDecision::ReadItems | RequestDecision::Fatal => {
                            metrics::counter!("bulk.requests", "result" => "fatal").increment(1);
                            return Err(Fatal(format!(
                                "bulk request to {} was refused with HTTP {}: {detail}",
                                self.index,
                                status.map_or("?".into(), |s| s.to_string())
                            )));
                        }
                    }
                    continue;
                }
            };
            metrics::counter!("bulk.requests", "result" => "ok").increment(1);
            request_failures = 0;
            let mut retry = Vec::new();
            for (item, result) in batch.items.iter().zip(results) {
                let es_type = result.error.as_ref().map(|e| e.kind.as_str());
                let outcome = match classify_item(item.op, result.status, es_type) {
                    ItemDecision::Applied => ItemOutcome::Applied(item.op),
                    ItemDecision::AlreadyApplied => ItemOutcome::AlreadyApplied,
                    ItemDecision::Retry if item.attempts < self.policy.max_attempts => {
                        retry.push(item.clone());
                        continue;
                    }
                    ItemDecision::Retry => dead_letter("retries_exhausted", &result, item, &batch),
                    ItemDecision::DeadLetter => dead_letter("mapping", &result, item, &batch),
                    ItemDecision::Fatal => {
                        return Err(Fatal(format!(
                            "{} answered {} for document {}: {}",
                            self.index,
                            result.status,
                            batch.document_id(item),
                            describe(&result)
                        )))
                    }
                };
                outcomes.push((item.ticket, outcome));
            }
            if let Some(attempts) = retry.iter().map(|i| i.attempts).max() {
                metrics::counter!("bulk.items.retried").increment(retry.len() as u64);
                let wait = backoff(attempts - 1, self.policy.base, self.policy.max, jitter());
                tracing::debug!(index = %self.index, items = retry.len(), retry_in_ms = wait.as_millis() as u64, "retrying items");
                tokio::time::sleep(wait).await;
                queue.push(batch.subset(retry));
            }
        }
        Ok(outcomes)
    }

    async fn send(&self, body: &[u8]) -> Attempt {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        let response = self
            .client
            .send(
                Method::Post,
                &self.path,
                headers,
                None::<&()>,
                Some(body),
                Some(self.timeout),
            )
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Attempt::Failed {
                    status: None,
                    detail: e.to_string(),
                }
            }
        };
        let status = response.status_code().as_u16();
        let bytes = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Attempt::Failed {
                    status: None,
                    detail: format!("reading the response: {e}"),
                }
            }
        };
        if !(200..300).contains(&status) {
            return Attempt::Failed {
                status: Some(status),
                detail: excerpt(&bytes),
            };
        }
        match serde_json::from_slice::<BulkResponse>(&bytes) {
            Ok(parsed) if !parsed.errors => Attempt::AllApplied,
            Ok(parsed) => Attempt::Items(parsed.items.into_iter().map(|i| i.result).collect()),
            Err(e) => Attempt::Failed {
                status: None,
                detail: format!("unreadable bulk response ({e}): {}", excerpt(&bytes)),
            },
        }
    }
}

fn dead_letter(
    class: &'static str,
    result: &ItemResult,
    item: &BatchItem,
    batch: &Batch,
) -> ItemOutcome {
    ItemOutcome::DeadLetter {
        class,
        reason: describe(result),
        es_type: result.error.as_ref().map(|e| e.kind.clone()),
        attempts: item.attempts,
        original: batch.original(item),
    }
}

fn describe(result: &ItemResult) -> String {
    match &result.error {
        Some(e) => format!(
            "HTTP {} {}: {}",
            result.status,
            e.kind,
            e.reason.as_deref().unwrap_or("")
        ),
        None => format!("HTTP {}", result.status),
    }
}

fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]);
    text.into_owned()
}

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos | 1
}

/// A uniform random number in `[0, 1)` for backoff jitter (xorshift; quality is not a concern here).
pub fn jitter() -> f64 {
    RNG.with(|cell| {
        let mut x = cell.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cell.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    })
}
