//! Hostile input against the decoder and the transform: nothing panics, and every payload is
//! either applied by the documented rules or refused with a reason (and so dead-lettered).
//!
//! - `tests/corpus/hostile/` holds interesting inputs, named by their expected outcome:
//!   `ok-*` are applied, `decode-*` and `transform-*` are refused with that class.
//! - The proptest campaign throws arbitrary bytes, arbitrary JSON envelopes, deep nesting, huge tag
//!   maps, megabyte values, keys with `:` and control characters, numbers where strings belong and
//!   duplicate keys at `prepare`, and checks every outcome against the rules.

use dual_indexer::envelope::{Plan, Record};
use dual_indexer::generate;
use dual_indexer::transform::key_to_value::{self, MAX_KEYWORD_BYTES};
use dual_indexer::transform::{Op, Schema};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Applies one payload and checks the outcome against the documented rules. Returns the
/// rejection class, or `None` when the payload became a write.
fn apply(payload: &[u8]) -> Option<&'static str> {
    apply_with(&Plan::builtin(Default::default()), payload)
}

/// [`apply`] through any envelope mapping.
fn apply_with(plan: &Plan, payload: &[u8]) -> Option<&'static str> {
    let record = Record::new(payload, Some(b"fallback-id"), 7);
    match plan.prepare(Schema::New, &record) {
        Ok(write) => {
            assert!(!write.id.is_empty());
            if let Op::Index(source) = &write.op {
                let doc: Value =
                    serde_json::from_slice(&source.to_json()).expect("an indexed body is JSON");
                let tags = doc["tags"].as_array().expect("tags is an array");
                let mut previous: Option<String> = None;
                for tag in tags {
                    let encoded = tag["keyToValue"].as_str().expect("keyToValue is a string");
                    let value = tag["value"].as_str().expect("value is a string");
                    assert!(encoded.len() <= MAX_KEYWORD_BYTES && value.len() <= MAX_KEYWORD_BYTES);
                    let (key, decoded) = key_to_value::decode(encoded).expect("keyToValue decodes");
                    assert_eq!(decoded, value, "keyToValue carries the value");
                    assert!(!key.is_empty());
                    if let Some(previous) = &previous {
                        assert!(
                            previous.as_str() < key.as_str(),
                            "tags sorted by key, no duplicates"
                        );
                    }
                    previous = Some(key);
                }
            }
            None
        }
        Err(rejection) => {
            assert!(
                !rejection.to_string().trim().is_empty(),
                "a reason is given"
            );
            let class = rejection.class();
            assert!(["decode", "transform"].contains(&class), "{class}");
            Some(class)
        }
    }
}

#[test]
fn the_committed_corpus_meets_its_expected_outcomes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/hostile");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let payload = std::fs::read(&path).unwrap();
        let expected = match name.split('-').next().unwrap() {
            "ok" => None,
            "decode" => Some("decode"),
            "transform" => Some("transform"),
            other => panic!("{name}: unknown expectation `{other}`"),
        };
        assert_eq!(apply(&payload), expected, "{name}");
        checked += 1;
    }
    assert!(checked >= 15, "the corpus is there ({checked} files)");
}

#[test]
fn a_megabyte_tag_value_is_refused_by_the_transform_and_a_megabyte_field_is_kept() {
    let value = "x".repeat(1 << 20);
    let tag = json!({"type": "upsert", "id": "mb", "tags": {"note": value}});
    assert_eq!(apply(tag.to_string().as_bytes()), Some("transform"));
    let field =
        json!({"type": "upsert", "id": "mb", "tags": {"a": "b"}, "fields": {"title": value}});
    assert_eq!(apply(field.to_string().as_bytes()), None);
}

/// Strings that stress the encoding: `:`, `\`, control characters, unicode, empty.
/// The mapping of `docs/examples/nested-mapping.toml`, which reads `generate --format nested`.
fn nested_plan() -> Plan {
    Plan::compile(generate::nested::mapping()).expect("a valid mapping")
}

fn nasty_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z:\\\\]{0,12}",
        "[\\x00-\\x1f:]{1,6}",
        "\\PC{0,16}",
        Just(String::new()),
        Just(":".repeat(40)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        nasty_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(nasty_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        apply(&bytes);
    }

    #[test]
    fn arbitrary_nested_messages_through_a_mapping_are_applied_or_refused_with_a_reason(
        op in prop_oneof![Just(json!("UPDATE")), Just(json!("REMOVE")), json_value()],
        seq in json_value(),
        uid in prop_oneof![nasty_string().prop_map(Value::String), json_value()],
        pairs in prop::collection::vec((json_value(), json_value()), 0..6),
        payload in json_value(),
    ) {
        let mut inner = if payload.is_object() { payload } else { json!({"other": payload}) };
        inner["uid"] = uid;
        inner["tags"] = pairs.into_iter().map(|(k, v)| json!({"k": k, "v": v})).collect();
        let message = json!({"meta": {"op": op, "seq": seq}, "payload": inner});
        apply_with(&nested_plan(), message.to_string().as_bytes());
        apply_with(&nested_plan(), &message.to_string().as_bytes()[..message.to_string().len() / 2]);
    }

    #[test]
    fn arbitrary_envelopes_are_applied_or_refused_with_a_reason(
        kind in prop_oneof![Just("upsert"), Just("delete"), Just("other")],
        id in prop_oneof![nasty_string().prop_map(Value::String), json_value()],
        tags in json_value(),
        fields in json_value(),
        extra in prop::option::of(json_value()),
    ) {
        let mut command = json!({"type": kind, "id": id, "tags": tags, "fields": fields});
        if let Some(extra) = extra {
            command["unexpected"] = extra;
        }
        apply(command.to_string().as_bytes());
    }

    #[test]
    fn scalar_tag_maps_of_any_size_follow_the_rules(
        tags in prop::collection::btree_map(nasty_string(), prop_oneof![
            nasty_string().prop_map(Value::String),
            any::<i64>().prop_map(|n| json!(n)),
            any::<bool>().prop_map(Value::Bool),
        ], 0..300),
    ) {
        let command = json!({"type": "upsert", "id": "t", "tags": tags});
        let empty_key = tags.keys().any(String::is_empty);
        let outcome = apply(command.to_string().as_bytes());
        if empty_key {
            prop_assert_eq!(outcome, Some("decode"), "an empty tag key is refused");
        } else {
            // Every value here is short, so nothing exceeds the keyword limit.
            prop_assert_eq!(outcome, None);
            // The document carries exactly the input's tags, encoded by this test's own rule
            // rather than checked with the crate's decoder.
            let expected: Vec<Value> = tags
                .iter()
                .map(|(key, value)| {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    let escaped = key.replace('\\', "\\\\").replace(':', "\\:");
                    json!({"keyToValue": format!("{escaped}:{text}"), "value": text})
                })
                .collect();
            let payload = command.to_string();
            let record = Record::new(payload.as_bytes(), None, 1);
            let write = Plan::builtin(Default::default()).prepare(Schema::New, &record).unwrap();
            let Op::Index(source) = write.op else { panic!("an upsert") };
            let doc: Value = serde_json::from_slice(&source.to_json()).unwrap();
            prop_assert_eq!(&doc["tags"], &Value::Array(expected));
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed(depth in 1usize..3_000, open in prop_oneof![Just("["), Just("{\"a\":")]) {
        let close = if open == "[" { "]" } else { "}" };
        let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
        let payload = format!("{{\"type\":\"upsert\",\"id\":\"d\",\"fields\":{{\"f\":{nested}}}}}");
        // The rule counts the field value's own brackets: deeper than the limit is refused,
        // anything up to it is kept for the mapping to judge.
        let expected = (depth > dual_indexer::command::MAX_FIELD_DEPTH).then_some("decode");
        prop_assert_eq!(apply(payload.as_bytes()), expected);
    }

    #[test]
    fn duplicate_keys_anywhere_are_refused(key in "[a-z]{1,5}", first in "[a-z]{0,5}", second in "[a-z]{0,5}") {
        let in_tags = format!("{{\"type\":\"upsert\",\"id\":\"x\",\"tags\":{{\"{key}\":\"{first}\",\"{key}\":\"{second}\"}}}}");
        prop_assert_eq!(apply(in_tags.as_bytes()), Some("decode"));
    }
}
