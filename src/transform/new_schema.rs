//! The new cluster's document shape: the flattened `keyToValue` tag schema.
//!
//! `{"name": "dor", "lastName": "sever"}` becomes
//! `"tags": [{"keyToValue": "lastName:sever", "value": "sever"}, {"keyToValue": "name:dor", "value": "dor"}]`,
//! sorted by key so that one command always encodes to the same bytes. The command's other
//! `fields` follow, sorted by name and copied as raw JSON; the strict mapping in
//! `schemas/new-index-template.json` decides whether Elasticsearch accepts them.
//!
//! Rules for awkward tags:
//! - an absent or empty tag map gives `"tags": []`;
//! - an empty value is kept (`"keyToValue": "k:"`, `"value": ""`);
//! - a `keyToValue` longer than Lucene's 32,766-byte term limit is rejected here, with the tag
//!   named, instead of failing later inside a bulk item.

use super::key_to_value::{self, MAX_KEYWORD_BYTES};
use super::Rejection;
use crate::command::Command;
use std::borrow::Cow;

use crate::json_text::{write_decoded, write_single_line};

/// Encodes an upsert command's document `_source` in the new schema.
pub fn encode_document(command: &Command<'_>) -> Result<Vec<u8>, Rejection> {
    check(command)?;
    let mut out = Vec::with_capacity(encoded_len_estimate(command));
    write_document(command, &mut out);
    Ok(out)
}

/// About how many bytes the command's document takes, to size a buffer for it.
pub(super) fn encoded_len_estimate(command: &Command<'_>) -> usize {
    let fields_len: usize = command
        .fields
        .iter()
        .map(|(k, v)| k.len() + v.len() + 4)
        .sum();
    let tags_len: usize = command
        .tags
        .iter()
        .map(|(k, v)| 2 * (k.len() + v.len()) + 32)
        .sum();
    16 + tags_len + fields_len
}

/// Refuses a command whose document Elasticsearch would refuse: a tag whose `keyToValue` is
/// longer than a keyword term may be. Both schemas apply it.
pub fn check(command: &Command<'_>) -> Result<(), Rejection> {
    for (key, value) in &command.tags {
        // A key escapes at most every byte, so only a long tag needs its bytes counted.
        if 2 * key.len() + 1 + value.len() <= MAX_KEYWORD_BYTES {
            continue;
        }
        let len = key_to_value::encoded_len(key, value);
        if len > MAX_KEYWORD_BYTES {
            return Err(Rejection::Transform(format!(
                "tag `{}` encodes to a {len}-byte keyToValue; keyword terms are limited to {MAX_KEYWORD_BYTES} bytes",
                truncate_for_message(key)
            )));
        }
    }
    Ok(())
}

/// Appends a [`check`]ed command's document `_source` to `out`.
pub fn write_document(command: &Command<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"tags\":[");
    for (i, (key, value)) in command.tags.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"keyToValue\":");
        if matches!((key, value), (Cow::Borrowed(_), Cow::Borrowed(_))) {
            // Both borrowed: see `json_text::write_decoded` for why they need no JSON escaping.
            key_to_value::write_json_plain(out, key, value);
        } else {
            key_to_value::write_json(out, key, value);
        }
        out.extend_from_slice(b",\"value\":");
        write_decoded(out, value);
        out.push(b'}');
    }
    out.push(b']');
    write_fields(out, &command.fields);
    out.push(b'}');
}

/// Appends `,"name":raw` for each of the command's other fields, unchanged but for line breaks
/// (see [`write_single_line`]). Both schemas keep them at the top level of the document.
pub(super) fn write_fields(out: &mut Vec<u8>, fields: &[crate::command::Field<'_>]) {
    for (name, raw) in fields {
        out.push(b',');
        write_decoded(out, name);
        out.push(b':');
        write_single_line(out, raw);
    }
}

fn truncate_for_message(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn encode(payload: &str) -> Result<Value, Rejection> {
        let command = Command::decode(payload.as_bytes()).unwrap();
        encode_document(&command).map(|bytes| serde_json::from_slice(&bytes).unwrap())
    }

    #[test]
    fn the_write_up_example_becomes_sorted_key_to_value_tags() {
        let doc = encode(r#"{"type":"upsert","tags":{"name":"dor","lastName":"sever"}}"#).unwrap();
        assert_eq!(
            doc,
            json!({"tags": [
                {"keyToValue": "lastName:sever", "value": "sever"},
                {"keyToValue": "name:dor", "value": "dor"}
            ]})
        );
    }

    #[test]
    fn other_fields_follow_the_tags_sorted_and_unchanged() {
        let doc = encode(r#"{"type":"upsert","fields":{"title":"a \"b\"","severity":"high","updated_at":"2026-01-01T00:00:00Z"}}"#).unwrap();
        assert_eq!(
            doc,
            json!({"tags": [], "severity": "high", "title": "a \"b\"", "updated_at": "2026-01-01T00:00:00Z"})
        );
    }

    #[test]
    fn empty_values_and_colon_keys_follow_the_documented_rules() {
        let doc = encode(r#"{"type":"upsert","tags":{"k8s:ns":"prod","e":""}}"#).unwrap();
        assert_eq!(
            doc["tags"],
            json!([{"keyToValue": "e:", "value": ""}, {"keyToValue": "k8s\\:ns:prod", "value": "prod"}])
        );
    }

    #[test]
    fn a_value_past_the_keyword_limit_is_rejected_with_its_tag_named() {
        let payload = format!(
            r#"{{"type":"upsert","tags":{{"blob":"{}"}}}}"#,
            "x".repeat(MAX_KEYWORD_BYTES)
        );
        let err = encode(&payload).unwrap_err();
        assert!(
            err.to_string()
                .contains("tag `blob` encodes to a 32771-byte keyToValue"),
            "{err}"
        );
    }

    #[test]
    fn a_value_exactly_at_the_limit_is_accepted() {
        let payload = format!(
            r#"{{"type":"upsert","tags":{{"b":"{}"}}}}"#,
            "x".repeat(MAX_KEYWORD_BYTES - 2)
        );
        assert!(encode(&payload).is_ok());
    }

    #[test]
    fn the_escapes_of_a_key_count_toward_the_limit() {
        // 16,000 colons escape to 32,000 bytes: with the separator and the value the tag is one
        // byte over the limit, though its key and value alone are 16,766 bytes.
        let key = ":".repeat(16_000);
        let over = format!(
            r#"{{"type":"upsert","tags":{{"{key}":"{}"}}}}"#,
            "x".repeat(MAX_KEYWORD_BYTES - 32_000)
        );
        let err = encode(&over).unwrap_err();
        assert!(err.to_string().contains("encodes to a 32767-byte"), "{err}");
        let at = format!(
            r#"{{"type":"upsert","tags":{{"{key}":"{}"}}}}"#,
            "x".repeat(MAX_KEYWORD_BYTES - 32_001)
        );
        assert!(encode(&at).is_ok());
    }

    proptest! {
        #[test]
        fn every_tag_survives_the_round_trip(tags in proptest::collection::btree_map(".{1,12}", ".{0,12}", 0..12)) {
            let payload = json!({"type": "upsert", "tags": tags}).to_string();
            let doc = encode(&payload).unwrap();
            let got: Vec<(String, String)> = doc["tags"].as_array().unwrap().iter().map(|t| {
                let value = t["value"].as_str().unwrap().to_owned();
                let decoded = key_to_value::decode(t["keyToValue"].as_str().unwrap()).unwrap();
                prop_assert_eq!(&decoded.1, &value);
                Ok(decoded)
            }).collect::<Result<_, TestCaseError>>()?;
            let expected: Vec<(String, String)> = tags.into_iter().collect();
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn the_same_command_always_encodes_to_the_same_bytes(tags in proptest::collection::hash_map("[a-z]{1,6}", "[a-z]{0,6}", 0..10)) {
            let payload = json!({"type": "upsert", "tags": tags}).to_string();
            let a = encode_document(&Command::decode(payload.as_bytes()).unwrap()).unwrap();
            let b = encode_document(&Command::decode(payload.as_bytes()).unwrap()).unwrap();
            prop_assert_eq!(a, b);
        }
    }
}
