//! The decision table: what a bulk response means for each item, and for the request as a whole.
//!
//! Every item of every response is classified on its own. A response with `"errors": true` is
//! never judged as a whole, so a 429 on one item is retried even when its neighbours succeeded.
//!
//! | item status | meaning | decision |
//! |---|---|---|
//! | 2xx | written | applied |
//! | 404 on a delete | the document is already gone (the version tombstone is still recorded) | applied |
//! | 409 `version_conflict_engine_exception` | a newer or equal version is there | already applied |
//! | 404 `index_not_found_exception` | the target index is missing | fatal: stop, commit nothing past it |
//! | 429, 5xx | overload or a transient shard failure | retry with backoff, then dead-letter |
//! | any other 4xx | the document itself is refused (e.g. strict mapping) | dead-letter at once |
//!
//! | request status | decision |
//! |---|---|
//! | 2xx | read the items |
//! | 408, 429, 5xx, no response | retry the whole request, with backoff, without limit |
//! | 413 | split the batch in two and send the halves |
//! | 401, 403, other 4xx | fatal: a configuration or compatibility problem that retrying cannot fix |

use std::time::Duration;

use super::request::OpKind;

/// What to do with one bulk item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemDecision {
    /// Written: the command's effect is in the index.
    Applied,
    /// Elasticsearch already holds this version or a newer one.
    AlreadyApplied,
    /// Try again later.
    Retry,
    /// Refused for good: dead-letter it.
    DeadLetter,
    /// Nothing can succeed until an operator acts.
    Fatal,
}

/// Classifies one item by its operation, status and error type.
pub fn classify_item(op: OpKind, status: u16, error_type: Option<&str>) -> ItemDecision {
    match (status, error_type) {
        (200..=299, _) => ItemDecision::Applied,
        (404, Some("index_not_found_exception")) => ItemDecision::Fatal,
        (404, _) if op == OpKind::Delete => ItemDecision::Applied,
        (409, Some("version_conflict_engine_exception")) => ItemDecision::AlreadyApplied,
        (429, _) | (500..=599, _) => ItemDecision::Retry,
        _ => ItemDecision::DeadLetter,
    }
}

/// What to do with a whole `_bulk` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestDecision {
    /// The request went through; classify its items.
    ReadItems,
    /// Send the same request again after a backoff.
    Retry,
    /// The body is too large: send it in two halves.
    Split,
    /// Stop the pipeline.
    Fatal,
}

/// Classifies a whole request by its HTTP status; `None` means no response arrived at all.
pub fn classify_request(status: Option<u16>) -> RequestDecision {
    match status {
        None | Some(408 | 429) | Some(500..=599) => RequestDecision::Retry,
        Some(200..=299) => RequestDecision::ReadItems,
        Some(413) => RequestDecision::Split,
        Some(_) => RequestDecision::Fatal,
    }
}

/// Exponential backoff with full jitter: a uniformly random wait in `[0, min(max, base · 2^attempt)]`.
/// `unit` is a random number in `[0, 1)`, passed in so the rule stays a pure function.
pub fn backoff(attempt: u32, base: Duration, max: Duration, unit: f64) -> Duration {
    let ceiling = base
        .saturating_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .min(max);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ItemDecision::*;

    #[test]
    fn the_item_table() {
        let vc = Some("version_conflict_engine_exception");
        let cases = [
            (OpKind::Index, 201, None, Applied),
            (OpKind::Index, 200, None, Applied),
            (OpKind::Delete, 200, None, Applied),
            (OpKind::Delete, 404, None, Applied),
            (OpKind::Index, 409, vc, AlreadyApplied),
            (OpKind::Delete, 409, vc, AlreadyApplied),
            (
                OpKind::Index,
                429,
                Some("es_rejected_execution_exception"),
                Retry,
            ),
            (
                OpKind::Index,
                503,
                Some("unavailable_shards_exception"),
                Retry,
            ),
            (OpKind::Index, 500, None, Retry),
            (
                OpKind::Index,
                400,
                Some("strict_dynamic_mapping_exception"),
                DeadLetter,
            ),
            (
                OpKind::Index,
                400,
                Some("mapper_parsing_exception"),
                DeadLetter,
            ),
            (OpKind::Index, 404, Some("index_not_found_exception"), Fatal),
            (
                OpKind::Delete,
                404,
                Some("index_not_found_exception"),
                Fatal,
            ),
            (OpKind::Index, 409, Some("something_else"), DeadLetter),
        ];
        for (op, status, kind, expected) in cases {
            assert_eq!(
                classify_item(op, status, kind),
                expected,
                "{op:?} {status} {kind:?}"
            );
        }
    }

    #[test]
    fn the_request_table() {
        use RequestDecision::*;
        for (status, expected) in [
            (None, Retry),
            (Some(200), ReadItems),
            (Some(429), Retry),
            (Some(408), Retry),
            (Some(502), Retry),
            (Some(503), Retry),
            (Some(413), Split),
            (Some(400), Fatal),
            (Some(401), Fatal),
            (Some(403), Fatal),
        ] {
            assert_eq!(classify_request(status), expected, "{status:?}");
        }
    }

    #[test]
    fn backoff_grows_then_caps_and_never_exceeds_the_ceiling() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        assert_eq!(
            backoff(0, base, max, 0.999_999),
            Duration::from_millis(100).mul_f64(0.999_999)
        );
        assert_eq!(backoff(3, base, max, 0.5), Duration::from_millis(400));
        assert_eq!(backoff(20, base, max, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX, base, max, 1.0), max);
        assert_eq!(backoff(5, base, max, 0.0), Duration::ZERO);
    }
}
