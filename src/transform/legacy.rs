//! The legacy document shape, and the legacy → new transform that `verify` (and `backfill`)
//! apply to documents read from the legacy cluster.
//!
//! A legacy document keeps its tags as one dynamic field per key, `actions.tags.<key>`, mapped as
//! `text` by the dynamic template in `schemas/legacy-index-template.json`; the command's other
//! fields sit at the top level, as in the new schema:
//!
//! ```json
//! {"actions": {"tags": {"lastName": "sever", "name": "dor"}}, "title": "…"}
//! ```
//!
//! `run --schema legacy` writes this shape. It is the reference indexer for the side-by-side tests
//! and the local demo, and it rejects exactly what the new schema rejects, so that both clusters
//! hold comparable documents. A real legacy cluster may hold documents the new schema refuses;
//! [`to_new`] names the reason, and `verify` reports them as untransformable.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::key_to_value::{self, MAX_KEYWORD_BYTES};
use super::{new_schema, Rejection};
use crate::command::Command;
use crate::json_text::write_decoded;

/// Encodes an upsert command's document `_source` in the legacy shape.
pub fn encode_document(command: &Command<'_>) -> Result<Vec<u8>, Rejection> {
    // One rule set for both schemas: whatever the new schema refuses, the reference legacy
    // indexer refuses too.
    new_schema::check(command)?;
    let mut out = Vec::with_capacity(new_schema::encoded_len_estimate(command));
    write_document(command, &mut out);
    Ok(out)
}

/// Appends a checked command's document `_source` in the legacy shape to `out`.
pub fn write_document(command: &Command<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"actions\":{\"tags\":{");
    for (i, (key, value)) in command.tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_decoded(out, key);
        out.push(b':');
        write_decoded(out, value);
    }
    out.extend_from_slice(b"}}");
    new_schema::write_fields(out, &command.fields);
    out.push(b'}');
}

/// The tags of a legacy `_source`, flattened to `key → value` text. Nested objects under
/// `actions.tags` are the same fields as dotted keys to Elasticsearch, so they flatten to
/// `a.b.c`; numbers and booleans become their JSON text, as the command decoder does.
pub fn legacy_tags(source: &Value) -> Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    match source.get("actions").and_then(|a| a.get("tags")) {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => flatten("", map, &mut tags)?,
        Some(other) => return Err(format!("`actions.tags` is {}, not an object", kind(other))),
    }
    Ok(tags)
}

fn flatten(
    prefix: &str,
    map: &Map<String, Value>,
    out: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (key, value) in map {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Object(inner) => {
                flatten(&key, inner, out)?;
                continue;
            }
            Value::Null | Value::Array(_) => {
                return Err(format!(
                    "tag `{key}` is {}; a tag value must be a string, number or boolean",
                    kind(value)
                ))
            }
        };
        if key.is_empty() {
            return Err("a tag has an empty key".into());
        }
        if out.insert(key.clone(), text).is_some() {
            return Err(format!("tag `{key}` appears both dotted and nested"));
        }
    }
    Ok(())
}

/// Transforms a legacy `_source` into the new schema's document, with the same `keyToValue`
/// encoding and limits as the indexer. The error says why the document has no place in the new
/// schema.
pub fn to_new(source: &Value) -> Result<Value, String> {
    let Some(object) = source.as_object() else {
        return Err(format!("the document is {}, not an object", kind(source)));
    };
    let tags = legacy_tags(source)?;
    let mut encoded = Vec::with_capacity(tags.len());
    for (key, value) in &tags {
        let key_to_value = key_to_value::encode(key, value);
        if key_to_value.len() > MAX_KEYWORD_BYTES {
            return Err(format!(
                "tag `{key}` encodes to a {}-byte keyToValue; keyword terms are limited to {MAX_KEYWORD_BYTES} bytes",
                key_to_value.len()
            ));
        }
        encoded.push(serde_json::json!({"keyToValue": key_to_value, "value": value}));
    }
    let mut out = Map::new();
    out.insert("tags".into(), Value::Array(encoded));
    for (name, value) in object {
        match name.as_str() {
            "actions" => {
                if let Some(extra) = value
                    .as_object()
                    .and_then(|a| a.keys().find(|k| *k != "tags"))
                {
                    return Err(format!("`actions.{extra}` has no place in the new schema"));
                }
            }
            "tags" => {
                return Err(
                    "a top-level `tags` field would collide with the new schema's tags".into(),
                )
            }
            _ => {
                out.insert(name.clone(), value.clone());
            }
        }
    }
    Ok(Value::Object(out))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn legacy(payload: &str) -> Value {
        let command = Command::decode(payload.as_bytes()).unwrap();
        serde_json::from_slice(&encode_document(&command).unwrap()).unwrap()
    }

    #[test]
    fn the_write_up_command_becomes_dynamic_tag_fields() {
        assert_eq!(
            legacy(
                r#"{"type":"upsert","tags":{"name":"dor","lastName":"sever"},"fields":{"status":"open"}}"#
            ),
            json!({"actions": {"tags": {"lastName": "sever", "name": "dor"}}, "status": "open"})
        );
    }

    #[test]
    fn legacy_then_to_new_equals_the_new_schema_directly() {
        let payload = r#"{"type":"upsert","tags":{"k8s:ns":"a:b","name":"John Smith","e":"","n":7},"fields":{"title":"x \"y\"","severity":"high"}}"#;
        let command = Command::decode(payload.as_bytes()).unwrap();
        let direct: Value =
            serde_json::from_slice(&new_schema::encode_document(&command).unwrap()).unwrap();
        assert_eq!(to_new(&legacy(payload)).unwrap(), direct);
    }

    #[test]
    fn nested_tag_objects_are_dotted_keys() {
        let doc = json!({"actions": {"tags": {"app": {"kubernetes": {"io/name": "api"}}, "n": 3, "b": true}}});
        assert_eq!(
            to_new(&doc).unwrap(),
            json!({"tags": [
                {"keyToValue": "app.kubernetes.io/name:api", "value": "api"},
                {"keyToValue": "b:true", "value": "true"},
                {"keyToValue": "n:3", "value": "3"}
            ]})
        );
        let clash = json!({"actions": {"tags": {"a.b": "x", "a": {"b": "y"}}}});
        assert!(to_new(&clash)
            .unwrap_err()
            .contains("both dotted and nested"));
    }

    #[test]
    fn documents_without_a_place_in_the_new_schema_are_named() {
        assert!(to_new(&json!({"actions": {"tags": {"k": null}}}))
            .unwrap_err()
            .contains("tag `k` is null"));
        assert!(to_new(&json!({"actions": {"tags": {"k": ["a"]}}}))
            .unwrap_err()
            .contains("an array"));
        assert!(to_new(&json!({"actions": {"other": 1}}))
            .unwrap_err()
            .contains("`actions.other`"));
        assert!(to_new(&json!({"tags": []}))
            .unwrap_err()
            .contains("collide"));
        let long = json!({"actions": {"tags": {"k": "x".repeat(MAX_KEYWORD_BYTES)}}});
        assert!(to_new(&long)
            .unwrap_err()
            .contains("keyword terms are limited"));
        assert_eq!(to_new(&json!({})).unwrap(), json!({"tags": []}));
    }

    #[test]
    fn the_reference_legacy_indexer_refuses_what_the_new_schema_refuses() {
        let payload = format!(
            r#"{{"type":"upsert","tags":{{"blob":"{}"}}}}"#,
            "x".repeat(MAX_KEYWORD_BYTES)
        );
        let command = Command::decode(payload.as_bytes()).unwrap();
        assert!(encode_document(&command).is_err());
    }
}
