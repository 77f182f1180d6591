//! The generated commands in a producer's own nested format, for the demo and the benchmarks of
//! the envelope mapping (format 1 of `docs/envelope.md`, read by
//! `docs/examples/nested-mapping.toml`):
//!
//! ```json
//! {"meta": {"op": "UPDATE", "seq": 7},
//!  "payload": {"uid": "doc-1", "tenant": "tenant-2", "title": "…", "tags": [{"k": "name", "v": "dor"}]}}
//! ```
//!
//! Upserts become `UPDATE`, deletes `REMOVE`, and any other `type` its upper-case name (so planted
//! poison stays poison). The tenant, the routing, is a function of the id. A payload that is not a
//! JSON object is kept as it is.

use serde_json::{json, Value};

use crate::envelope::{Mapping, Pointer, TagsFormat, TextSource, VersionSource};

/// The tenant a document id routes to.
pub fn tenant_of(id: &str) -> String {
    let sum: u32 = id.bytes().map(u32::from).sum();
    format!("tenant-{}", sum % 4)
}

/// Rewrites one built-in envelope payload into the nested format.
pub fn to_nested(payload: &[u8]) -> Vec<u8> {
    let Ok(Value::Object(command)) = serde_json::from_slice::<Value>(payload) else {
        return payload.to_vec();
    };
    let mut inner = match command.get("fields") {
        Some(Value::Object(fields)) => fields.clone(),
        _ => serde_json::Map::new(),
    };
    if let Some(id) = command.get("id") {
        inner.insert("uid".into(), id.clone());
        if let Some(id) = id.as_str() {
            inner.insert("tenant".into(), json!(tenant_of(id)));
        }
    }
    if let Some(Value::Object(tags)) = command.get("tags") {
        let pairs = tags.iter().map(|(k, v)| json!({"k": k, "v": v}));
        inner.insert("tags".into(), Value::Array(pairs.collect()));
    }
    let op = match command.get("type").and_then(Value::as_str) {
        Some("upsert") => "UPDATE".to_owned(),
        Some("delete") => "REMOVE".to_owned(),
        Some(other) => other.to_uppercase(),
        None => String::new(),
    };
    let mut meta = json!({"op": op});
    if let Some(version) = command.get("version") {
        meta["seq"] = version.clone();
    }
    serde_json::to_vec(&json!({"meta": meta, "payload": inner})).expect("in memory")
}

/// The mapping that reads this format: `docs/examples/nested-mapping.toml` as a value (a test
/// keeps the two equal).
pub fn mapping() -> Mapping {
    let pointer = |p: &str| Pointer::parse(p).expect("a valid pointer");
    let operation = |s: &str| s.parse().expect("a valid operation value");
    Mapping {
        id: vec![TextSource::Value(pointer("/payload/uid"))],
        operation: pointer("/meta/op"),
        operations: ["CREATE=upsert", "UPDATE=upsert", "REMOVE=delete"]
            .into_iter()
            .map(operation)
            .collect(),
        version: VersionSource::Value(pointer("/meta/seq")),
        tags: pointer("/payload/tags"),
        tags_format: TagsFormat::Pairs,
        tag_key: pointer("/k"),
        tag_value: pointer("/v"),
        fields: pointer("/payload"),
        routing: Some(TextSource::Value(pointer("/payload/tenant"))),
        ..Mapping::default()
    }
}
