//! `schemas/command.schema.json` and the decoder describe the same envelope: every payload is
//! accepted by both or refused by both.

use dual_indexer::command::Command;
use dual_indexer::generate::{self, GeneratorSpec, Poison};
use serde_json::Value;

fn schema() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(include_str!("../schemas/command.schema.json")).unwrap();
    jsonschema::validator_for(&schema).expect("the command schema is a valid JSON Schema")
}

fn agree(validator: &jsonschema::Validator, payload: &str) {
    let value: Value = serde_json::from_str(payload).expect("corpus entries are JSON");
    let by_schema = validator.is_valid(&value);
    let by_decoder = Command::decode(payload.as_bytes());
    assert_eq!(
        by_schema,
        by_decoder.is_ok(),
        "schema and decoder disagree on {payload}: decoder says {by_decoder:?}"
    );
}

#[test]
fn schema_and_decoder_agree_on_a_corpus_of_edge_cases() {
    let validator = schema();
    // Each payload with its verdict: a valid command (true) or one refused (false).
    let cases = [
        (
            r#"{"type":"upsert","id":"a","tags":{"name":"dor","lastName":"sever"}}"#,
            true,
        ),
        (r#"{"type":"upsert"}"#, true),
        (r#"{"type":"delete","id":"a","version":3}"#, true),
        (r#"{"type":"delete"}"#, true),
        (r#"{"type":"upsert","tags":{"n":1,"b":false,"s":""}}"#, true),
        (
            r#"{"type":"upsert","tags":{"a:b":"c"},"fields":{"title":"x","nested":{"deep":[1,2]}}}"#,
            true,
        ),
        (r#"{"type":"upsert","timestamp":1700000000000}"#, true),
        (r#"{"type":"merge"}"#, false),
        (r#"{"id":"a"}"#, false),
        (r#"{"type":"upsert","extra":1}"#, false),
        (r#"{"type":"upsert","tags":{"a":null}}"#, false),
        (r#"{"type":"upsert","tags":{"a":["x"]}}"#, false),
        (r#"{"type":"upsert","tags":{"a":{"b":"c"}}}"#, false),
        (r#"{"type":"upsert","tags":{"":"x"}}"#, false),
        (r#"{"type":"upsert","tags":[]}"#, false),
        (r#"{"type":"upsert","fields":{"tags":[]}}"#, false),
        (r#"{"type":"upsert","fields":[]}"#, false),
        (r#"{"type":"delete","tags":{}}"#, false),
        (r#"{"type":"delete","fields":{}}"#, false),
        (r#"{"type":"upsert","version":-1}"#, false),
        (r#"{"type":"upsert","version":"3"}"#, false),
        (r#"{"type":"upsert","id":7}"#, false),
        (r#"[]"#, false),
        (r#""upsert""#, false),
    ];
    for (payload, valid) in cases {
        agree(&validator, payload);
        assert_eq!(
            Command::decode(payload.as_bytes()).is_ok(),
            valid,
            "expected {} for {payload}",
            if valid {
                "a valid command"
            } else {
                "a refusal"
            }
        );
    }
}

#[test]
fn schema_and_decoder_agree_on_the_generated_stream() {
    let validator = schema();
    let messages = generate::messages(&GeneratorSpec {
        count: 3_000,
        ids: 200,
        poison_every: 50,
        ..GeneratorSpec::default()
    });
    let mut checked = 0;
    for m in messages {
        // Poison that is not JSON at all cannot be judged by a schema.
        if matches!(m.poison, Some(Poison::InvalidJson | Poison::InvalidUtf8)) {
            continue;
        }
        agree(&validator, std::str::from_utf8(&m.payload).unwrap());
        checked += 1;
    }
    assert!(checked > 2_900);
}
