//! Reading Elasticsearch's answer to a `_bulk` request: one result per item, or why there is
//! none (a refused request, a gateway's answer without items, no answer at all).

use serde::Deserialize;

use super::transport::Exchange;

#[derive(Deserialize)]
struct BulkResponse {
    #[serde(default)]
    items: Option<Vec<ItemEnvelope>>,
}

#[derive(Deserialize)]
struct ItemEnvelope {
    #[serde(alias = "index", alias = "create", alias = "update", alias = "delete")]
    result: ItemResult,
}

#[derive(Deserialize)]
pub(super) struct ItemResult {
    pub(super) status: u16,
    #[serde(default)]
    pub(super) error: Option<ItemError>,
}

#[derive(Deserialize)]
pub(super) struct ItemError {
    #[serde(rename = "type", default)]
    pub(super) kind: String,
    #[serde(default)]
    pub(super) reason: Option<String>,
}

/// The error object of a refused request (`{"error": {"type": …, "reason": …}}`).
#[derive(Deserialize)]
struct ErrorResponse {
    error: ItemError,
}

/// What one request brought back.
pub(super) enum Attempt {
    Items(Vec<ItemResult>),
    /// A 2xx answer without `items` (a proxy's or gateway's, not Elasticsearch's).
    NoItems(String),
    Failed {
        status: Option<u16>,
        error: Option<ItemError>,
        detail: String,
        timed_out: bool,
    },
}

/// What an exchange with the cluster says about a request: item answers, or why there are none.
pub(super) fn read_answer(exchange: Exchange) -> Attempt {
    let (status, bytes) = match exchange {
        Exchange::Answered { status, body } => (status, body),
        Exchange::Failed { timed_out, detail } => {
            return Attempt::Failed {
                status: None,
                error: None,
                timed_out,
                detail,
            }
        }
    };
    if !(200..300).contains(&status) {
        return Attempt::Failed {
            status: Some(status),
            error: serde_json::from_slice::<ErrorResponse>(&bytes)
                .ok()
                .map(|e| e.error),
            timed_out: false,
            detail: excerpt(&bytes),
        };
    }
    match serde_json::from_slice::<BulkResponse>(&bytes) {
        Ok(BulkResponse { items: Some(items) }) => {
            Attempt::Items(items.into_iter().map(|i| i.result).collect())
        }
        Ok(BulkResponse { items: None }) => Attempt::NoItems(format!(
            "HTTP {status} without `items`, so no document is known to be written: {}",
            excerpt(&bytes)
        )),
        Err(e) => Attempt::Failed {
            status: None,
            error: None,
            timed_out: false,
            detail: format!("unreadable bulk response ({e}): {}", excerpt(&bytes)),
        },
    }
}

pub(super) fn describe(result: &ItemResult) -> String {
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

pub(super) fn excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]);
    text.into_owned()
}
