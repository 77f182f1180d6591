//! Dialect layers of the test proxy: what another Elasticsearch or OpenSearch version answers
//! where the stand-in (osmem-server: OpenSearch 3.8, with Elasticsearch 7 error names) answers
//! otherwise, reproduced from the official reference and nothing more. Every rule is listed with
//! its source in docs/compatibility.md ("Dialect layers of the test proxy"); a request no rule
//! touches reaches the stand-in unchanged.
//!
//! The stand-in is more permissive than any one version: it has both sorts on `_id` and
//! `_shard_doc`, the OpenSearch point in time, untyped requests and the 7.x `hits.total`. A layer
//! takes away what its version lacks, and translates what its version spells differently (the
//! Elasticsearch `_pit` onto the stand-in's OpenSearch point in time), so a client that passes
//! through the layer speaks that version's dialect.

use serde_json::{json, Value};

/// The version a proxy speaks as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Elasticsearch 8.15.
    Elasticsearch8,
    /// Elasticsearch 6.8.
    Elasticsearch68,
    /// OpenSearch 2.11.
    OpenSearch2,
}

/// What the layer does with one request.
#[derive(Debug)]
pub enum Step {
    /// Not the layer's business: the proxy goes on as without it.
    Pass,
    /// Answered by the layer; a 4xx is a refusal, counted by the proxy.
    Answer(u16, Value),
    /// Sent upstream as given, and the answer rewritten by `then`.
    Forward {
        method: String,
        path: String,
        body: Vec<u8>,
        then: Then,
    },
}

/// How an upstream answer is rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// OpenSearch `{"pit_id"}` → Elasticsearch `{"id"}`.
    PitOpened,
    /// OpenSearch `{"pits": […]}` → Elasticsearch `{"succeeded", "num_freed"}`.
    PitClosed,
    /// 6.8: `hits.total` a number, `_type: _doc` in hits and `_mget` docs.
    SixEight,
    /// Unchanged.
    AsIs,
}

/// The request as the layer sees it.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a [u8],
}

impl Dialect {
    /// `GET /` of this version (shapes from each reference's "Root API" / "Info API" example).
    fn root(self) -> Value {
        match self {
            Self::Elasticsearch8 => json!({
                "name": "dialect-es8", "cluster_name": "dialect", "cluster_uuid": "dialect-es8",
                "version": {"number": "8.15.0", "build_flavor": "default", "build_type": "docker",
                    "build_hash": "dialect", "build_date": "2024-08-05T10:05:34.233336849Z",
                    "build_snapshot": false, "lucene_version": "9.11.1",
                    "minimum_wire_compatibility_version": "7.17.0",
                    "minimum_index_compatibility_version": "7.0.0"},
                "tagline": "You Know, for Search"
            }),
            Self::Elasticsearch68 => json!({
                "name": "dialect-es68", "cluster_name": "dialect", "cluster_uuid": "dialect-es68",
                "version": {"number": "6.8.23", "build_flavor": "default", "build_type": "docker",
                    "build_hash": "dialect", "build_date": "2022-01-06T14:35:14.283329Z",
                    "build_snapshot": false, "lucene_version": "7.7.3",
                    "minimum_wire_compatibility_version": "5.6.0",
                    "minimum_index_compatibility_version": "5.0.0"},
                "tagline": "You Know, for Search"
            }),
            Self::OpenSearch2 => json!({
                "name": "dialect-os2", "cluster_name": "dialect", "cluster_uuid": "dialect-os2",
                "version": {"distribution": "opensearch", "number": "2.11.1", "build_type": "tar",
                    "build_hash": "dialect", "build_date": "2023-11-29T21:43:10.135035992Z",
                    "build_snapshot": false, "lucene_version": "9.7.0",
                    "minimum_wire_compatibility_version": "7.10.0",
                    "minimum_index_compatibility_version": "7.0.0"},
                "tagline": "The OpenSearch Project: https://opensearch.org/"
            }),
        }
    }

    /// What this version does with `request`.
    pub fn route(self, request: &Request<'_>) -> Step {
        let (path, query) = request.path.split_once('?').unwrap_or((request.path, ""));
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if request.method == "GET" && segments.is_empty() {
            return Step::Answer(200, self.root());
        }
        let body: Value = serde_json::from_slice(request.body).unwrap_or(Value::Null);
        match self {
            Self::Elasticsearch8 => es8(request, path, query, &segments, &body),
            Self::Elasticsearch68 => es68(request, path, &segments, &body),
            Self::OpenSearch2 => os2(request, path, &segments, &body),
        }
    }
}

fn is_search(segments: &[&str]) -> bool {
    segments.last() == Some(&"_search")
}

fn is_scroll(segments: &[&str]) -> bool {
    segments.ends_with(&["_search", "scroll"])
}

fn sorts_on(body: &Value, field: &str) -> bool {
    let on = |s: &Value| s == field || s.get(field).is_some();
    match &body["sort"] {
        Value::Array(sorts) => sorts.iter().any(on),
        Value::Null => false,
        other => on(other),
    }
}

/// How Elasticsearch (and OpenSearch) answer a path no handler serves.
fn no_handler(method: &str, path: &str) -> Step {
    Step::Answer(
        400,
        json!({"error": format!("no handler found for uri [{path}] and method [{method}]"), "status": 400}),
    )
}

fn search_failure(kind: &str, reason: String) -> Step {
    let cause = json!({"type": kind, "reason": reason});
    Step::Answer(
        400,
        json!({"error": {"root_cause": [cause], "type": "search_phase_execution_exception",
            "reason": "all shards failed", "phase": "query", "grouped": true, "caused_by": cause},
            "status": 400}),
    )
}

fn validation_failure(reason: &str) -> Step {
    let cause = json!({"type": "action_request_validation_exception", "reason": format!("Validation Failed: 1: {reason};")});
    Step::Answer(
        400,
        json!({"error": {"root_cause": [cause.clone()], "type": cause["type"], "reason": cause["reason"]}, "status": 400}),
    )
}

fn es8(request: &Request<'_>, path: &str, query: &str, segments: &[&str], body: &Value) -> Step {
    // The OpenSearch point in time is not an Elasticsearch API.
    if path.contains("/_search/point_in_time") {
        return no_handler(request.method, path);
    }
    match (request.method, segments) {
        ("POST", [index, "_pit"]) => {
            if !query.split('&').any(|p| p.starts_with("keep_alive=")) {
                return validation_failure("[keep_alive] is not specified");
            }
            return Step::Forward {
                method: "POST".into(),
                path: format!("/{index}/_search/point_in_time?{query}"),
                body: Vec::new(),
                then: Then::PitOpened,
            };
        }
        ("DELETE", ["_pit"]) => {
            let Some(id) = body["id"].as_str() else {
                return validation_failure("id is required");
            };
            return Step::Forward {
                method: "DELETE".into(),
                path: "/_search/point_in_time".into(),
                body: json!({"pit_id": [id]}).to_string().into_bytes(),
                then: Then::PitClosed,
            };
        }
        _ => {}
    }
    if is_search(segments) {
        if body.get("pit").is_some() {
            // "A subsequent search request with the pit parameter must not specify index,
            // routing, or preference values as these parameters are copied from the point in time."
            if segments.len() > 1 {
                return validation_failure("[indices] cannot be used with point in time. Do not specify any index with point in time.");
            }
            if query
                .split('&')
                .any(|p| p.starts_with("routing=") || p.starts_with("preference="))
            {
                return validation_failure(
                    "[routing] and [preference] cannot be used with point in time",
                );
            }
        }
        if sorts_on(body, "_id") {
            return search_failure("illegal_argument_exception", "Fielddata access on the _id field is disallowed, you can re-enable it by updating the dynamic cluster setting: indices.id_field_data.enabled".into());
        }
    }
    Step::Pass
}

fn es68(request: &Request<'_>, path: &str, segments: &[&str], body: &Value) -> Step {
    // No point in time before 7.10.
    if segments.contains(&"_pit") || path.contains("/_search/point_in_time") {
        return no_handler(request.method, path);
    }
    if is_search(segments) {
        if body.get("pit").is_some() {
            return Step::Answer(
                400,
                json!({"error": {"root_cause": [{"type": "parsing_exception", "reason": "Unknown key for a START_OBJECT in [pit]."}], "type": "parsing_exception", "reason": "Unknown key for a START_OBJECT in [pit]."}, "status": 400}),
            );
        }
        if sorts_on(body, "_shard_doc") {
            return search_failure(
                "query_shard_exception",
                "No mapping found for [_shard_doc] in order to sort on".into(),
            );
        }
    }
    if is_search(segments) || is_scroll(segments) {
        return forward(request, request.path.to_owned(), Then::SixEight);
    }
    match segments {
        [index, "_doc", "_mget"] => {
            let query = request.path.split_once('?').map(|(_, q)| format!("?{q}"));
            forward(
                request,
                format!("/{index}/_mget{}", query.unwrap_or_default()),
                Then::SixEight,
            )
        }
        [.., "_mget"] => forward(request, request.path.to_owned(), Then::SixEight),
        [index, doc_type, "_bulk"] => typed_bulk(request, index, Some(doc_type)),
        [index, "_bulk"] => typed_bulk(request, index, None),
        _ => Step::Pass,
    }
}

fn forward(request: &Request<'_>, path: String, then: Then) -> Step {
    Step::Forward {
        method: request.method.to_owned(),
        path,
        body: request.body.to_vec(),
        then,
    }
}

/// 6.8 needs a type for every bulk item, from its action or the URL; the stand-in takes none.
fn typed_bulk(request: &Request<'_>, index: &str, url_type: Option<&str>) -> Step {
    let mut out = Vec::new();
    let mut lines = request
        .body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty());
    while let Some(line) = lines.next() {
        let mut action: Value = serde_json::from_slice(line).unwrap_or(Value::Null);
        let Some((op, meta)) = action.as_object_mut().and_then(|o| o.iter_mut().next()) else {
            return validation_failure("no requests added");
        };
        let op = op.clone();
        let typed = meta
            .as_object_mut()
            .and_then(|m| m.remove("_type"))
            .is_some();
        if !typed && url_type.is_none() {
            return validation_failure("type is missing");
        }
        out.extend_from_slice(action.to_string().as_bytes());
        out.push(b'\n');
        if op != "delete" {
            if let Some(source) = lines.next() {
                out.extend_from_slice(source);
                out.push(b'\n');
            }
        }
    }
    let query = request
        .path
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    Step::Forward {
        method: request.method.to_owned(),
        path: format!("/{index}/_bulk{query}"),
        body: out,
        then: Then::AsIs,
    }
}

fn os2(request: &Request<'_>, path: &str, segments: &[&str], body: &Value) -> Step {
    // The Elasticsearch point in time is not an OpenSearch API.
    if segments.contains(&"_pit") {
        return no_handler(request.method, path);
    }
    // `_shard_doc` came to OpenSearch in 3.3.
    if is_search(segments) && sorts_on(body, "_shard_doc") {
        return search_failure(
            "query_shard_exception",
            "No mapping found for [_shard_doc] in order to sort on".into(),
        );
    }
    Step::Pass
}

/// Rewrites an upstream answer as the dialect's.
pub fn finish(then: Then, status: u16, body: Vec<u8>) -> (u16, Vec<u8>) {
    if then == Then::AsIs || !(200..300).contains(&status) {
        return (status, body);
    }
    let Ok(mut reply) = serde_json::from_slice::<Value>(&body) else {
        return (status, body);
    };
    let out = match then {
        Then::PitOpened => json!({"id": reply["pit_id"]}),
        Then::PitClosed => {
            let pits = reply["pits"].as_array().cloned().unwrap_or_default();
            let freed = pits.iter().filter(|p| p["successful"] == true).count();
            json!({"succeeded": freed == pits.len(), "num_freed": freed})
        }
        Then::SixEight => {
            if let Some(total) = reply["hits"]["total"]["value"].as_u64() {
                reply["hits"]["total"] = json!(total);
            }
            for list in ["/hits/hits", "/docs"] {
                let docs = reply.pointer_mut(list).and_then(Value::as_array_mut);
                for doc in docs.into_iter().flatten() {
                    doc["_type"] = json!("_doc");
                }
            }
            reply
        }
        Then::AsIs => reply,
    };
    (status, out.to_string().into_bytes())
}
