//! The plan against the three producer formats of `docs/envelope.md`, every class of mapping
//! error, and the built-in envelope read both ways.

use super::*;
use crate::generate::{messages, GeneratorSpec};
use crate::transform::Op;

fn plan(args: &[&str]) -> Plan {
    let mut m = Mapping::default();
    for arg in args {
        let (flag, value) = arg.split_once(' ').unwrap_or((arg, ""));
        match flag {
            "--id-from" => m.id = value.split(',').map(|s| s.parse().unwrap()).collect(),
            "--operation-from" => m.operation = Pointer::parse(value).unwrap(),
            "--operation" => m.operations = value.split(',').map(|s| s.parse().unwrap()).collect(),
            "--default-operation" => {
                m.default_operation = Some(mapping::parse_kind(value).unwrap())
            }
            "--version-source" => m.version = value.parse().unwrap(),
            "--tags-from" => m.tags = Pointer::parse(value).unwrap(),
            "--tags-format" => m.tags_format = value.parse().unwrap(),
            "--tag-key" => m.tag_key = Pointer::parse(value).unwrap(),
            "--tag-value" => m.tag_value = Pointer::parse(value).unwrap(),
            "--tag-prefix" => m.tag_prefix = value.into(),
            "--fields-from" => m.fields = Pointer::parse(value).unwrap(),
            "--field" => m.only_fields = value.split(',').map(String::from).collect(),
            "--rename-field" => m.renames = value.split(',').map(|s| s.parse().unwrap()).collect(),
            "--routing-from" => m.routing = Some(value.parse().unwrap()),
            "--tombstones" => m.tombstones = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    Plan::compile(m).unwrap()
}

/// Format 1: nested, the operation and version in `meta`, tags as `{k, v}` pairs.
fn nested() -> Plan {
    plan(&[
        "--id-from /payload/uid",
        "--operation-from /meta/op",
        "--operation CREATE=upsert,UPDATE=upsert,REMOVE=delete",
        "--version-source /meta/seq",
        "--tags-from /payload/tags",
        "--tags-format pairs",
        "--tag-key /k",
        "--tag-value /v",
        "--fields-from /payload",
    ])
}

fn document(write: &Write<'_>) -> serde_json::Value {
    match &write.op {
        Op::Index(source) => serde_json::from_slice(&source.to_json()).unwrap(),
        Op::Delete => serde_json::Value::Null,
    }
}

fn record(payload: &[u8]) -> Record<'_> {
    Record::new(payload, None, 5)
}

#[test]
fn a_nested_format_with_pairs_and_a_payload_version_is_read() {
    let payload = br#"{"meta":{"op":"UPDATE","seq":7,"source":"crm"},"payload":{"uid":"u-1","title":"T","tags":[{"k":"name","v":"dor"},{"k":"age","v":42}]}}"#;
    let write = nested().prepare(Schema::New, &record(payload)).unwrap();
    assert_eq!(
        (&*write.id, write.version, &write.routing),
        ("u-1", 7, &None)
    );
    assert_eq!(
        document(&write),
        serde_json::json!({
            "tags": [
                {"keyToValue": "age:42", "value": "42"},
                {"keyToValue": "name:dor", "value": "dor"}
            ],
            "title": "T"
        })
    );
    let delete = br#"{"meta":{"op":"REMOVE","seq":9},"payload":{"uid":"u-1","tags":[]}}"#;
    let write = nested().prepare(Schema::New, &record(delete)).unwrap();
    assert_eq!((write.version, write.op), (9, Op::Delete));
}

#[test]
fn the_id_from_the_key_and_the_version_from_a_header() {
    let p = plan(&[
        "--id-from key",
        "--version-source header:version",
        "--operation-from /op",
        "--default-operation upsert",
        "--tags-from /labels",
        "--fields-from ",
    ]);
    let headers: &[(&str, &[u8]); 2] = &[("version", b"3"), ("version", b"12")];
    let message = Record {
        payload: Some(br#"{"labels":{"team":"a"},"size":3}"#),
        key: Some(b"doc-7"),
        offset: 1,
        timestamp: Some(1_700_000_000_000),
        headers: Some(headers),
    };
    let write = p.prepare(Schema::New, &message).unwrap();
    assert_eq!(
        (&*write.id, write.version),
        ("doc-7", 12),
        "the last header wins"
    );
    assert_eq!(
        document(&write),
        serde_json::json!({"tags": [{"keyToValue": "team:a", "value": "a"}], "size": 3})
    );
    let without = Record {
        headers: None,
        ..message
    };
    let err = p.prepare(Schema::New, &without).unwrap_err();
    assert!(err.to_string().contains("no `version` header"), "{err}");
}

#[test]
fn tombstones_delete_by_key_when_configured() {
    let compacted = plan(&["--id-from key", "--tombstones delete", "--fields-from "]);
    let tombstone = Record {
        payload: None,
        ..Record::new(b"", Some(b"doc-3"), 40)
    };
    let write = compacted.prepare(Schema::New, &tombstone).unwrap();
    assert_eq!(
        (&*write.id, write.version, write.op),
        ("doc-3", 40, Op::Delete)
    );
    let err = Plan::builtin(VersionSource::Offset)
        .prepare(Schema::New, &tombstone)
        .unwrap_err();
    assert!(err.to_string().contains("--tombstones delete"), "{err}");
}

#[test]
fn prefixed_tags_renames_and_an_allow_list() {
    let p = plan(&[
        "--id-from /id",
        "--default-operation upsert",
        "--tags-format prefix",
        "--tag-prefix tag.",
        "--fields-from ",
        "--field title,userName,tag.x",
        "--rename-field userName=user_name",
    ]);
    let payload =
        br#"{"id":"d","tag.name":"dor","tag.x":"1","title":"t","userName":"u","secret":"s"}"#;
    let write = p.prepare(Schema::New, &record(payload)).unwrap();
    assert_eq!(
        document(&write),
        serde_json::json!({
            "tags": [
                {"keyToValue": "name:dor", "value": "dor"},
                {"keyToValue": "x:1", "value": "1"}
            ],
            "title": "t",
            "user_name": "u"
        })
    );
}

#[test]
fn routing_comes_from_its_source_and_its_absence_is_refused() {
    let p = plan(&["--routing-from /fields/tenant"]);
    let payload = br#"{"type":"upsert","id":"d","fields":{"tenant":"acme"}}"#;
    let write = p.prepare(Schema::New, &record(payload)).unwrap();
    assert_eq!(write.routing.as_deref(), Some("acme"));
    let err = p
        .prepare(Schema::New, &record(br#"{"type":"upsert","id":"d"}"#))
        .unwrap_err();
    assert!(
        err.to_string().contains("no routing at /fields/tenant"),
        "{err}"
    );
    let by_key = plan(&["--routing-from key"]);
    let write = by_key
        .prepare(
            Schema::New,
            &Record::new(br#"{"type":"delete","id":"d"}"#, Some(b"t1"), 1),
        )
        .unwrap();
    assert_eq!(write.routing.as_deref(), Some("t1"));
}

#[test]
fn every_mapping_error_names_its_pointer() {
    let cases: [(&[u8], &str); 9] = [
        (
            br#"{"meta":{"op":"MERGE","seq":1},"payload":{"uid":"u"}}"#,
            "operation `MERGE` at /meta/op is not mapped; mapped: CREATE, UPDATE, REMOVE",
        ),
        (
            br#"{"meta":{"seq":1},"payload":{"uid":"u"}}"#,
            "no operation at /meta/op",
        ),
        (
            br#"{"meta":{"op":"CREATE"},"payload":{"uid":"u"}}"#,
            "no value at /meta/seq",
        ),
        (
            br#"{"meta":{"op":"CREATE","seq":"x1"},"payload":{"uid":"u"}}"#,
            "the version at /meta/seq must be a non-negative integer",
        ),
        (
            br#"{"meta":{"op":"CREATE","seq":1},"payload":{"uid":{"a":1}}}"#,
            "/payload/uid must be a string or a number, got an object",
        ),
        (
            br#"{"meta":{"op":"CREATE","seq":1},"payload":{"tags":[]}}"#,
            "no document id: the message has none of /payload/uid",
        ),
        (
            br#"{"meta":{"op":"CREATE","seq":1},"payload":{"uid":"u","tags":{"k":"a"}}}"#,
            "an array of {\"k\": …, \"v\": …} pairs at /payload/tags",
        ),
        (
            br#"{"meta":{"op":"CREATE","seq":1},"payload":{"uid":"u","tags":[{"k":"a"}]}}"#,
            "pair 0 of /payload/tags has no `v`",
        ),
        (
            br#"{"meta":"x","payload":{"uid":"u"}}"#,
            "expected an object at /meta",
        ),
    ];
    for (payload, expected) in cases {
        let err = nested().prepare(Schema::New, &record(payload)).unwrap_err();
        assert!(
            err.to_string().contains(expected),
            "{err}\n  expected: {expected}"
        );
    }
    let err = nested()
        .prepare(Schema::New, &record(br#"{"meta":{"op":"CREATE","seq":1},"payload":{"uid":"u","tags":[{"k":"a","v":"1"},{"k":"a","v":"2"}]}}"#))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("`tags` has the key `a` more than once"),
        "{err}"
    );
    let err = nested()
        .prepare(
            Schema::New,
            &record(br#"{"meta":{"op":"CREATE","seq":1,"op":"X"},"payload":{"uid":"u"}}"#),
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("/meta/op appears more than once"),
        "{err}"
    );
}

#[test]
fn array_members_are_reached_by_index() {
    let p = plan(&[
        "--id-from /ids/1",
        "--default-operation delete",
        "--fields-from /x",
    ]);
    let write = p
        .prepare(Schema::New, &record(br#"{"ids":["a","b","c"]}"#))
        .unwrap();
    assert_eq!(write.id, "b");
}

#[test]
fn versions_come_from_the_configured_source() {
    let payload = br#"{"type":"delete","id":"d","version":5,"timestamp":1700000000000}"#;
    let message = Record {
        timestamp: Some(1_650_000_000_000),
        ..Record::new(payload, None, 42)
    };
    let at = |s: &str| {
        Plan::builtin(s.parse().unwrap())
            .prepare(Schema::New, &message)
            .unwrap()
            .version
    };
    assert_eq!(at("offset"), 42);
    assert_eq!(at("version"), 5);
    assert_eq!(at("timestamp"), 1_700_000_000_000);
    assert_eq!(at("record-timestamp"), 1_650_000_000_000);
}

#[test]
fn a_missing_version_field_is_a_rejection_not_a_default() {
    let err = Plan::builtin(VersionSource::version_field())
        .prepare(Schema::New, &record(br#"{"type":"delete","id":"d"}"#))
        .unwrap_err();
    assert!(err.to_string().contains("has no `version` field"), "{err}");
}

#[test]
fn a_version_past_the_signed_range_is_refused_per_message() {
    let at_limit = format!(r#"{{"type":"delete","id":"d","version":{}}}"#, i64::MAX);
    let plan = Plan::builtin(VersionSource::version_field());
    let w = plan
        .prepare(Schema::New, &record(at_limit.as_bytes()))
        .unwrap();
    assert_eq!(w.version, i64::MAX as u64);
    for source in [
        VersionSource::version_field(),
        VersionSource::timestamp_field(),
    ] {
        let payload = format!(
            r#"{{"type":"delete","id":"d","version":{0},"timestamp":{0}}}"#,
            i64::MAX as u64 + 1
        );
        let err = Plan::builtin(source)
            .prepare(Schema::New, &record(payload.as_bytes()))
            .unwrap_err();
        assert_eq!(err.class(), "transform");
        assert!(
            err.to_string().contains("up to 9223372036854775807"),
            "{err}"
        );
    }
}

#[test]
fn the_id_falls_back_to_the_message_key_and_the_envelope_id_wins() {
    let plan = Plan::builtin(VersionSource::Offset);
    let w = plan
        .prepare(
            Schema::New,
            &Record::new(br#"{"type":"delete"}"#, Some(b"k1"), 7),
        )
        .unwrap();
    assert_eq!((&*w.id, w.version), ("k1", 7));
    let w = plan
        .prepare(
            Schema::New,
            &Record::new(br#"{"type":"delete","id":"d"}"#, Some(b"k"), 0),
        )
        .unwrap();
    assert_eq!(w.id, "d");
    let err = plan
        .prepare(Schema::New, &Record::new(br#"{"type":"delete"}"#, None, 0))
        .unwrap_err();
    assert_eq!(err.class(), "decode");
    assert!(err.to_string().contains("none of /id, key"), "{err}");
    let long = format!(r#"{{"type":"delete","id":"{}"}}"#, "x".repeat(513));
    let err = plan
        .prepare(Schema::New, &record(long.as_bytes()))
        .unwrap_err();
    assert!(err.to_string().contains("513 bytes"), "{err}");
}

#[test]
fn the_builtin_envelope_is_the_default_mapping_read_by_the_general_path_too() {
    let spec = GeneratorSpec {
        count: 3_000,
        ids: 200,
        ..GeneratorSpec::default()
    };
    for version in ["offset", "version", "timestamp"] {
        let builtin = Plan::builtin(version.parse().unwrap());
        let general = Plan::general(builtin.mapping().clone());
        let mut compared = 0;
        for (offset, m) in messages(&spec).iter().enumerate() {
            let message = Record::new(
                &m.payload,
                m.key.as_deref().map(str::as_bytes),
                offset as i64,
            );
            let message = Record {
                timestamp: Some(offset as i64),
                ..message
            };
            if let Ok(expected) = builtin.prepare(Schema::New, &message) {
                assert_eq!(general.prepare(Schema::New, &message), Ok(expected));
                compared += 1;
            }
        }
        assert!(compared > 2_500, "{compared} compared");
    }
}
