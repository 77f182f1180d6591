//! The one thing the sink asks of the network: send this `_bulk` body, bring back what came back.
//!
//! It is a trait so that the delivery's branches (split, isolate, hold, retry, fatal) can be
//! unit-tested against a scripted cluster ([`super::service`]'s tests); [`Http`] is the real
//! one. The body is [`Bytes`]: a retry or a resend hands the same buffer again, and the client
//! sends it without copying it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;

/// What came back for one request.
#[derive(Debug, Clone)]
pub enum Exchange {
    /// An HTTP answer, whatever its status.
    Answered {
        /// The HTTP status.
        status: u16,
        /// The response body.
        body: Bytes,
    },
    /// No answer: the connection failed, or the answer did not come in time.
    Failed {
        /// Whether the request timed out.
        timed_out: bool,
        /// What went wrong.
        detail: String,
    },
}

/// The answer to one request, when it comes.
pub type Pending<'a> = Pin<Box<dyn Future<Output = Exchange> + Send + 'a>>;

/// Sends `_bulk` bodies to one index or alias.
pub trait Transport: Send + Sync + 'static {
    /// Sends `body` and waits for what comes back.
    fn send(&self, body: Bytes) -> Pending<'_>;
}

/// The parts of a `_bulk` answer the sink reads ([`super::answer`]): each item's `status` and
/// `error`, and a refused request's `error`. Elasticsearch (since 5.x) and OpenSearch drop the rest
/// of the answer when asked with `filter_path` ("Response filtering" in the REST API's common
/// options). A success item shrinks from its index, id, version, result, shards, sequence number and
/// term to its status: about a tenth of the bytes for the cluster to write and for us to parse. A
/// cluster or proxy that ignores the parameter sends the whole answer, which reads the same.
pub const BULK_ANSWER_FILTER: &str = "items.*.status,items.*.error,error,status";

/// The path of a `_bulk` request to `index` that asks for only what the sink reads.
pub fn bulk_path(index: &str) -> String {
    format!("/{index}/_bulk?filter_path={BULK_ANSWER_FILTER}")
}

/// `POST /<index>/_bulk` through the official client, with a timeout per request.
pub struct Http {
    client: Elasticsearch,
    path: String,
    timeout: Duration,
}

impl Http {
    /// A transport to `index` (an index or a write alias) through `client`.
    pub fn new(client: Elasticsearch, index: &str, timeout: Duration) -> Self {
        Self {
            client,
            path: bulk_path(index),
            timeout,
        }
    }
}

impl Transport for Http {
    fn send(&self, body: Bytes) -> Pending<'_> {
        Box::pin(async move {
            let mut headers = HeaderMap::new();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            let sent = self
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
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    return Exchange::Failed {
                        timed_out: e.is_timeout(),
                        detail: e.to_string(),
                    }
                }
            };
            let status = response.status_code().as_u16();
            match response.bytes().await {
                Ok(body) => Exchange::Answered { status, body },
                Err(e) => Exchange::Failed {
                    timed_out: e.is_timeout(),
                    detail: format!("reading the response: {e}"),
                },
            }
        })
    }
}
