//! The legacy indexer mode and `verify`, against the real broker and two ES stand-ins: the legacy
//! and new indexers replay one topic side by side, and `verify` compares the clusters.

mod support;

use std::time::Duration;

use dual_indexer::generate::{self, GeneratedMessage, GeneratorSpec};
use serde_json::{json, Value};
use support::*;

fn verify(stack: &Stack, pair: &SideBySide, extra: &[&str]) -> (i32, String, Value) {
    let report = std::env::temp_dir().join(format!("{}.json", unique("verify-report")));
    let output = indexer()
        .args([
            "verify",
            "--legacy-url",
            &stack.legacy_es,
            "--legacy-index",
            &pair.legacy_index,
            "--es-url",
            &stack.new_es,
            "--index",
            &pair.new_index,
            "--page-size",
            "300",
            "--report",
            report.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    let summary = String::from_utf8(output.stdout).unwrap();
    println!("{summary}");
    let text = std::fs::read_to_string(&report)
        .unwrap_or_else(|e| panic!("no report ({e}); verify printed:\n{summary}"));
    let parsed: Value = serde_json::from_str(&text).unwrap();
    let schema: Value =
        serde_json::from_str(include_str!("../schemas/verify-report.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
    let errors: Vec<String> = validator
        .iter_errors(&parsed)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the report breaks schemas/verify-report.schema.json: {errors:?}"
    );
    // The cutover gate reads the same file.
    let verdict =
        dual_indexer::cutover::gate::read_report(&report).expect("the gate reads the report");
    assert_eq!(verdict.clean, parsed["clean"].as_bool().unwrap());
    let _ = std::fs::remove_file(report);
    (output.status.code().unwrap(), summary, parsed)
}

fn corpus() -> Vec<GeneratedMessage> {
    generate::messages(&GeneratorSpec {
        count: 2_500,
        ids: 700,
        seed: 23,
        ..GeneratorSpec::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn side_by_side_replays_verify_clean_with_query_parity() {
    let stack = stack();
    let messages = corpus();
    let pair = replay_both(&stack, &messages).await;
    // Not verify's word alone: both clusters hold the documents an oracle computed from the
    // commands gives, the new one exactly, the legacy one by id.
    let records = read_topic(&stack, &pair.topic);
    let expected = oracle(&records, &poison_payloads(&messages), Versions::Offset);
    assert_index_equals(&stack.new_es, &pair.new_index, &expected).await;
    let legacy = dump_index(&stack.legacy_es, &pair.legacy_index).await;
    assert!(
        legacy.keys().eq(expected.keys()),
        "the legacy index holds other ids than the oracle"
    );
    let (code, summary, report) = verify(&stack, &pair, &["--sample-queries", "60"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(report["clean"], json!(true), "{summary}");
    let docs = &report["documents"];
    assert_eq!(docs["checked"], json!(expected.len()), "{summary}");
    assert_eq!(docs["checked"], docs["matching"]);
    assert_eq!(report["legacy"]["count"], report["new"]["count"]);
    let queries = &report["queries"];
    assert!(queries["total"].as_u64().unwrap() >= 60, "{summary}");
    assert_eq!(queries["different"], json!(0), "{summary}");
    // By value the hit sets are equal; by key and value, only the documented analysis gap.
    for d in queries["differences"].as_array().unwrap() {
        assert_eq!(
            (d["kind"].as_str(), d["class"].as_str()),
            (Some("key_value"), Some("analysis")),
            "{d}"
        );
    }
    // The same run with --strict-queries fails exactly when the analysis gap showed up.
    let (strict_code, summary, _) = verify(
        &stack,
        &pair,
        &["--sample-queries", "60", "--strict-queries"],
    );
    let gap = queries["analysis"].as_u64().unwrap() > 0;
    assert_eq!(strict_code, if gap { 1 } else { 0 }, "{summary}");
    // A quick sampled check agrees.
    let (code, summary, report) =
        verify(&stack, &pair, &["--sample", "100", "--sample-queries", "0"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(report["documents"]["mode"], "sample");
    assert_eq!(report["documents"]["checked"], json!(100));
}

#[tokio::test(flavor = "multi_thread")]
async fn planted_faults_in_the_new_cluster_are_reported_exactly() {
    let stack = stack();
    let messages = corpus();
    let pair = replay_both(&stack, &messages).await;
    let records = read_topic(&stack, &pair.topic);
    let expected = oracle(&records, &poison_payloads(&messages), Versions::Offset);
    let dump = dump_index(&stack.new_es, &pair.new_index).await;
    let ids: Vec<&String> = dump.keys().collect();
    let (deleted, changed) = (&ids[10..13], &ids[20..22]);
    let mut bulk = String::new();
    for id in deleted {
        bulk.push_str(&format!("{}\n", json!({"delete": {"_id": id}})));
    }
    for id in changed {
        let mut source: Value = serde_json::from_str(&dump[*id].source).unwrap();
        let tags = source["tags"].as_array_mut().unwrap();
        assert!(!tags.is_empty(), "document {id} has no tags to change");
        let key =
            dual_indexer::transform::key_to_value::decode(tags[0]["keyToValue"].as_str().unwrap())
                .unwrap()
                .0;
        tags[0] = json!({"keyToValue": dual_indexer::transform::key_to_value::encode(&key, "planted"), "value": "planted"});
        bulk.push_str(&format!("{}\n{}\n", json!({"index": {"_id": id}}), source));
    }
    bulk.push_str(&format!(
        "{}\n{}\n",
        json!({"index": {"_id": "zz-stray"}}),
        json!({"tags": [], "title": "stray"})
    ));
    bulk_ndjson(&stack.new_es, &pair.new_index, &bulk).await;

    let (code, summary, report) = verify(&stack, &pair, &["--sample-queries", "0"]);
    assert_eq!(code, 1, "{summary}");
    assert_eq!(report["clean"], json!(false));
    let docs = &report["documents"];
    let mut missing: Vec<String> = deleted.iter().map(|s| s.to_string()).collect();
    missing.sort();
    assert_eq!(
        docs["missing_in_new"],
        json!({"count": 3, "ids": missing}),
        "{summary}"
    );
    assert_eq!(
        docs["only_in_new"],
        json!({"count": 1, "ids": ["zz-stray"]}),
        "{summary}"
    );
    assert_eq!(docs["differing_count"], json!(2), "{summary}");
    for (diff, id) in docs["differing"].as_array().unwrap().iter().zip(changed) {
        assert_eq!(diff["id"], json!(id));
        let fields = diff["fields"].as_array().unwrap();
        assert_eq!(fields.len(), 1, "{diff}");
        assert!(
            fields[0]["field"].as_str().unwrap().starts_with("tags."),
            "{diff}"
        );
        assert_eq!(fields[0]["new"], json!("planted"), "{diff}");
        assert_ne!(fields[0]["legacy"], json!("planted"), "{diff}");
    }
    assert_eq!(docs["untransformable_count"], json!(0));
    let checked = docs["checked"].as_u64().unwrap();
    assert_eq!(
        checked,
        expected.len() as u64,
        "every legacy document is checked"
    );
    assert_eq!(docs["matching"].as_u64().unwrap(), checked - 5, "{summary}");
    // An ignored field hides its difference, and only that one.
    let (_, summary, report) = verify(
        &stack,
        &pair,
        &["--sample-queries", "0", "--ignore-field", "tags.*"],
    );
    assert_eq!(
        report["documents"]["differing_count"],
        json!(0),
        "{summary}"
    );
    assert_eq!(report["documents"]["missing_in_new"]["count"], json!(3));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bigpanda_example_queries_return_what_the_write_up_says() {
    let stack = stack();
    let topic = unique("bigpanda");
    let index = unique("tags-v2-bigpanda");
    let command = |id: &str, tags: Value| GeneratedMessage {
        key: Some(id.to_owned()),
        payload: json!({"type": "upsert", "id": id, "tags": tags})
            .to_string()
            .into_bytes(),
        poison: None,
    };
    let messages = vec![
        command("1", json!({"John": "Smith"})),
        command("2", json!({"Alice": "White"})),
        command("3", json!({"White": "Alice"})),
    ];
    produce_topic(&stack, &topic, 1, &messages).await;
    let mut child = indexer()
        .args(run_args(&stack, &topic, &unique("indexer"), &index))
        .arg("--until-caught-up")
        .guarded();
    assert!(wait_with_timeout(&mut child, Duration::from_secs(120)).success());
    let client = dual_indexer::es::client(&stack.new_es, Duration::from_secs(30)).unwrap();
    dual_indexer::es::refresh(&client, &index).await.unwrap();
    let search = |query: Value| {
        let client = client.clone();
        let index = index.clone();
        async move {
            let (ids, _) = dual_indexer::verify::queries::hit_ids(&client, &index, &query, 100)
                .await
                .unwrap();
            ids.into_iter().collect::<Vec<_>>()
        }
    };
    // The write-up's two queries, verbatim in shape.
    let by_key_and_value =
        json!({"bool": {"must": [{"match": {"tags.keyToValue": "Alice:White"}}]}});
    let by_value = json!({"bool": {"must": [{"match": {"tags.value": "White"}}]}});
    assert_eq!(search(by_key_and_value).await, vec!["2"]);
    assert_eq!(search(by_value).await, vec!["2"]);
    // The translation verify uses gives the same answers.
    let q = |key: Option<&str>, value: &str| dual_indexer::verify::queries::UserQuery {
        key: key.map(str::to_owned),
        value: value.to_owned(),
    };
    assert_eq!(
        search(
            dual_indexer::verify::queries::new_query(&q(Some("Alice"), "White"))
                .unwrap()
                .body
        )
        .await,
        vec!["2"]
    );
    assert_eq!(
        search(
            dual_indexer::verify::queries::new_query(&q(None, "White"))
                .unwrap()
                .body
        )
        .await,
        vec!["2"]
    );
}
