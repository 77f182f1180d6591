//! The decision table: what a bulk response means for each item, and for the request as a whole.
//!
//! Every item of every response is classified on its own. A response with `"errors": true` is
//! never judged as a whole, so a 429 on one item is retried even when its neighbours succeeded.
//!
//! Three kinds of refusal are told apart, because each needs a different answer:
//! - a **document** refusal (a strict-mapping error, a bad value) is final for that document:
//!   it is dead-lettered and the partition moves on;
//! - a **cluster condition** (a write block such as the flood-stage disk watermark, a closed
//!   index, an alias without a write index, an overload) says nothing about the document: the
//!   write is held and retried, without limit, until the cluster accepts it, and the pipeline
//!   holds (then pauses) behind it. `/readyz` and the `sink.holding` gauge say why;
//! - a **configuration** problem (the index is missing, the credentials are refused) stops the
//!   run: nothing can succeed until an operator acts.
//!
//! | item status | meaning | decision |
//! |---|---|---|
//! | 2xx | written | applied |
//! | 404 on a delete | the document is already gone (the version tombstone is still recorded) | applied |
//! | 409 `version_conflict_engine_exception` | a newer or equal version is there | already applied |
//! | 404 `index_not_found_exception` | the target index is missing | fatal: stop, commit nothing past it |
//! | any `cluster_block_exception` (403 or 429) | a write block: disk flood stage, `index.blocks.write`, `read_only_allow_delete` | hold |
//! | any `index_closed_exception` | the target index is closed | hold |
//! | 400 `illegal_argument_exception` "no write index is defined" | the write alias has no write index | hold |
//! | 429 | overload (`es_rejected_execution_exception`): accepted later | hold |
//! | 5xx | a shard failure of this write | retry with backoff for `--item-retry-secs`, then dead-letter |
//! | any other 4xx | the document itself is refused (e.g. strict mapping) | dead-letter at once |
//!
//! | request status | decision |
//! |---|---|
//! | 2xx with one item per document sent | read the items |
//! | 2xx without `items`, or with another count | hold: retry the whole request (a gateway's answer, not Elasticsearch's) |
//! | no response, 408, 429, 5xx | hold: retry the whole request, with backoff, without limit |
//! | no response within the timeout, twice in a row | split the batch in two and send the halves |
//! | a cluster condition (see the item table) | hold |
//! | 413 | split the batch in two and send the halves |
//! | 400 | split until the refused document is alone, then dead-letter it (`request_refused`) with Elasticsearch's reason; fatal once [`LONE_REFUSALS_FATAL`] lone documents in a row are refused with nothing accepted between them |
//! | 401, 403, other 4xx | fatal: a configuration or compatibility problem that retrying cannot fix |

use super::request::OpKind;

/// Lone documents refused in a row, with no request accepted between them, after which a
/// whole-request 400 is taken for a configuration problem (every document refused) rather than
/// for bad documents. Documents refused up to then are dead-lettered, so nothing is lost either
/// way; a topic with several bad documents next to each other stays below it in practice.
pub const LONE_REFUSALS_FATAL: u32 = 5;

/// What to do with one bulk item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemDecision {
    /// Written: the command's effect is in the index.
    Applied,
    /// Elasticsearch already holds this version or a newer one.
    AlreadyApplied,
    /// A failure of this write: try again, for a bounded time.
    Retry,
    /// A condition of the cluster: try again for as long as it lasts.
    Hold,
    /// Refused for good: dead-letter it.
    DeadLetter,
    /// Nothing can succeed until an operator acts.
    Fatal,
}

/// Whether an error is a condition of the cluster or index rather than of the document.
pub fn is_cluster_condition(status: u16, error_type: Option<&str>, reason: Option<&str>) -> bool {
    match error_type {
        Some("cluster_block_exception" | "index_closed_exception") => true,
        Some("illegal_argument_exception") => {
            status == 400 && reason.is_some_and(|r| r.contains("no write index is defined"))
        }
        _ => false,
    }
}

/// Classifies one item by its operation, status, error type and reason.
pub fn classify_item(
    op: OpKind,
    status: u16,
    error_type: Option<&str>,
    reason: Option<&str>,
) -> ItemDecision {
    if is_cluster_condition(status, error_type, reason) {
        return ItemDecision::Hold;
    }
    match (status, error_type) {
        (200..=299, _) => ItemDecision::Applied,
        (404, Some("index_not_found_exception")) => ItemDecision::Fatal,
        (404, _) if op == OpKind::Delete => ItemDecision::Applied,
        (409, Some("version_conflict_engine_exception")) => ItemDecision::AlreadyApplied,
        (429, _) => ItemDecision::Hold,
        (500..=599, _) => ItemDecision::Retry,
        _ => ItemDecision::DeadLetter,
    }
}

/// What to do with a whole `_bulk` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDecision {
    /// The request went through; classify its items.
    ReadItems,
    /// Send the same request again after a backoff, for as long as it takes.
    Hold,
    /// The body is too large: send it in two halves.
    Split,
    /// One document made Elasticsearch refuse the whole request: halve until it is alone.
    Isolate,
    /// Stop the pipeline.
    Fatal,
}

/// Classifies a whole request by its HTTP status (`None`: no response arrived at all) and, for
/// an error, Elasticsearch's error type and reason.
pub fn classify_request(
    status: Option<u16>,
    error_type: Option<&str>,
    reason: Option<&str>,
) -> RequestDecision {
    let Some(status) = status else {
        return RequestDecision::Hold;
    };
    if is_cluster_condition(status, error_type, reason) {
        return RequestDecision::Hold;
    }
    match status {
        408 | 429 | 500..=599 => RequestDecision::Hold,
        200..=299 => RequestDecision::ReadItems,
        413 => RequestDecision::Split,
        400 => RequestDecision::Isolate,
        _ => RequestDecision::Fatal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ItemDecision::*;

    #[test]
    fn the_item_table() {
        let vc = Some("version_conflict_engine_exception");
        let block = Some("cluster_block_exception");
        let cases = [
            (OpKind::Index, 201, None, None, Applied),
            (OpKind::Index, 200, None, None, Applied),
            (OpKind::Delete, 200, None, None, Applied),
            (OpKind::Delete, 404, None, None, Applied),
            (OpKind::Index, 409, vc, None, AlreadyApplied),
            (OpKind::Delete, 409, vc, None, AlreadyApplied),
            (OpKind::Index, 429, Some("es_rejected_execution_exception"), None, Hold),
            (OpKind::Index, 503, Some("unavailable_shards_exception"), None, Retry),
            (OpKind::Index, 500, None, None, Retry),
            (OpKind::Index, 400, Some("strict_dynamic_mapping_exception"), None, DeadLetter),
            (OpKind::Index, 400, Some("mapper_parsing_exception"), None, DeadLetter),
            (OpKind::Index, 404, Some("index_not_found_exception"), None, Fatal),
            (OpKind::Delete, 404, Some("index_not_found_exception"), None, Fatal),
            (OpKind::Index, 409, Some("something_else"), None, DeadLetter),
            // Write blocks hold deletes and upserts alike, so the index does not drift.
            (OpKind::Index, 403, block, Some("index [t] blocked by: [FORBIDDEN/12/index read-only / allow delete (api)];"), Hold),
            (OpKind::Delete, 403, block, None, Hold),
            (OpKind::Index, 429, block, Some("index [t] blocked by: [TOO_MANY_REQUESTS/12/disk usage exceeded flood-stage watermark, index has read-only-allow-delete block];"), Hold),
            (OpKind::Delete, 429, block, None, Hold),
            (OpKind::Index, 400, Some("index_closed_exception"), Some("closed"), Hold),
            (OpKind::Delete, 400, Some("index_closed_exception"), None, Hold),
            (OpKind::Index, 400, Some("illegal_argument_exception"), Some("no write index is defined for alias [tags]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index"), Hold),
            (OpKind::Index, 400, Some("illegal_argument_exception"), Some("mapper [title] cannot be changed"), DeadLetter),
        ];
        for (op, status, kind, reason, expected) in cases {
            assert_eq!(
                classify_item(op, status, kind, reason),
                expected,
                "{op:?} {status} {kind:?} {reason:?}"
            );
        }
    }

    #[test]
    fn the_request_table() {
        use RequestDecision::*;
        for (status, kind, expected) in [
            (None, None, Hold),
            (Some(200), None, ReadItems),
            (Some(429), None, Hold),
            (Some(408), None, Hold),
            (Some(502), None, Hold),
            (Some(503), None, Hold),
            (Some(413), None, Split),
            (Some(400), Some("illegal_argument_exception"), Isolate),
            (Some(400), Some("x_content_parse_exception"), Isolate),
            (Some(400), Some("index_closed_exception"), Hold),
            (Some(403), Some("cluster_block_exception"), Hold),
            (Some(401), None, Fatal),
            (Some(403), Some("security_exception"), Fatal),
        ] {
            assert_eq!(
                classify_request(status, kind, None),
                expected,
                "{status:?} {kind:?}"
            );
        }
    }
}
