//! `dlq show` against the dead-letter topic a real replay wrote: the counts and the entries
//! equal what the test planted, counted from the generator's own poison labels.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use dual_indexer::generate::{GeneratedMessage, Poison};
use serde_json::{json, Value};
use support::*;

/// Replays `topic` into `index` until caught up.
fn replay(stack: &Stack, topic: &str, group: &str, index: &str) {
    let mut child = indexer()
        .args(run_args(stack, topic, group, index))
        .arg("--until-caught-up")
        .guarded();
    assert!(wait_with_timeout(&mut child, Duration::from_secs(180)).success());
}

fn dlq_show(stack: &Stack, topic: &str, extra: &[&str]) -> String {
    let out = indexer()
        .args(["dlq", "show", "--brokers", &stack.brokers, "--topic", topic])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "dlq show exited {}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_show_counts_and_lists_exactly_the_planted_poison() {
    let stack = stack();
    let (topic, index, group) = (unique("dlq-show"), unique("tags-v2-dlq"), unique("indexer"));
    let messages = generated(1_500, 400, 9, 100);
    produce_topic(&stack, &topic, 3, &messages).await;
    replay(&stack, &topic, &group, &index);

    // What was planted, by the generator's labels: class per poison payload, and where each sits.
    let classes: BTreeMap<&[u8], &str> = messages
        .iter()
        .filter_map(|m| m.poison.map(|p| (m.payload.as_slice(), p.expected_class())))
        .collect();
    let records = read_topic(&stack, &topic);
    let planted: Vec<(&str, i32, i64)> = records
        .iter()
        .filter_map(|r| {
            classes
                .get(r.payload.as_slice())
                .map(|c| (*c, r.partition, r.offset))
        })
        .collect();
    assert!(planted.len() >= 10, "{} planted", planted.len());
    let mut by_class: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
    let mut spans: BTreeMap<i32, (usize, i64, i64)> = BTreeMap::new();
    for (class, partition, offset) in &planted {
        *by_class.entry(class).or_default() += 1;
        let reason = if *class == "mapping" {
            "strict_dynamic_mapping_exception"
        } else {
            class
        };
        *by_reason.entry(reason).or_default() += 1;
        let span = spans.entry(*partition).or_insert((0, *offset, *offset));
        *span = (span.0 + 1, span.1.min(*offset), span.2.max(*offset));
    }

    let summary: Value = serde_json::from_str(&dlq_show(&stack, &topic, &["--json"])).unwrap();
    assert_eq!(summary["total"], json!(planted.len()), "{summary}");
    assert_eq!(summary["by_class"], json!(by_class), "{summary}");
    assert_eq!(summary["by_reason"], json!(by_reason), "{summary}");
    let expected_spans: BTreeMap<String, Value> = spans
        .iter()
        .map(|(p, (count, oldest, newest))| {
            (
                p.to_string(),
                json!({"count": count, "oldest": oldest, "newest": newest}),
            )
        })
        .collect();
    assert_eq!(summary["by_partition"], json!(expected_spans), "{summary}");
    assert_eq!(summary["truncated"], json!(0));

    // The entries of one class, with their origin and the payload byte for byte.
    let lines = dlq_show(
        &stack,
        &topic,
        &["--entries", "--class", "decode", "--json"],
    );
    let entries: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut listed: Vec<(i32, i64)> = entries
        .iter()
        .map(|e| {
            (
                e["source_partition"].as_i64().unwrap() as i32,
                e["source_offset"].as_i64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    let mut decode: Vec<(i32, i64)> = planted
        .iter()
        .filter(|(c, _, _)| *c == "decode")
        .map(|(_, p, o)| (*p, *o))
        .collect();
    decode.sort();
    assert_eq!(listed, decode);
    for e in &entries {
        let source = records
            .iter()
            .find(|r| {
                i64::from(r.partition) == e["source_partition"].as_i64().unwrap()
                    && r.offset == e["source_offset"].as_i64().unwrap()
            })
            .unwrap();
        assert_eq!(
            e["payload"],
            json!(String::from_utf8_lossy(&source.payload))
        );
        assert_eq!(e["source_topic"], json!(topic));
    }

    // An offset range narrows the count; the text form names the topic and the total.
    let (p, (_, oldest, _)) = spans.iter().next().unwrap();
    let narrowed: Value = serde_json::from_str(&dlq_show(
        &stack,
        &topic,
        &[
            "--json",
            "--source-partition",
            &p.to_string(),
            "--to-offset",
            &oldest.to_string(),
        ],
    ))
    .unwrap();
    assert_eq!(narrowed["total"], json!(1), "{narrowed}");
    let text = dlq_show(&stack, &topic, &[]);
    assert!(
        text.starts_with(&format!("{topic}.dlq: {} dead letter(s)", planted.len())),
        "{text}"
    );
}

/// `dlq redrive` with its own group, against the stack's new cluster.
fn redrive(
    stack: &Stack,
    topic: &str,
    index: &str,
    group: &str,
    extra: &[&str],
) -> (i32, Vec<Value>) {
    let out = indexer()
        .args([
            "dlq",
            "redrive",
            "--brokers",
            &stack.brokers,
            "--topic",
            topic,
        ])
        .args([
            "--es-url",
            &stack.new_es,
            "--index",
            index,
            "--redrive-group",
            group,
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap_or(-1), lines)
}

/// Adds the field the generator's `UnknownField` poison carries to the index's strict mapping.
async fn add_colour_field(stack: &Stack, index: &str) {
    let client = dual_indexer::es::client(&stack.new_es, Duration::from_secs(30)).unwrap();
    let (status, body) = dual_indexer::es::request(
        &client,
        elasticsearch::http::Method::Put,
        &format!("/{index}/_mapping"),
        Some(&json!({"properties": {"colour": {"type": "keyword"}}})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redrive_after_the_mapping_is_fixed_reaches_the_oracle_and_moves_the_rest_on() {
    let stack = stack();
    let (topic, index, group) = (
        unique("redrive"),
        unique("tags-v2-redrive"),
        unique("indexer"),
    );
    let messages = generated(1_500, 400, 12, 60);
    produce_topic(&stack, &topic, 3, &messages).await;
    replay(&stack, &topic, &group, &index);
    let records = read_topic(&stack, &topic);
    let label: BTreeMap<&[u8], Poison> = messages
        .iter()
        .filter_map(|m| m.poison.map(|p| (m.payload.as_slice(), p)))
        .collect();
    let planted: Vec<&Record> = records
        .iter()
        .filter(|r| label.contains_key(r.payload.as_slice()))
        .collect();
    let unfixable: Vec<&Record> = planted
        .iter()
        .copied()
        .filter(|r| label[r.payload.as_slice()] != Poison::UnknownField)
        .collect();
    let fixable = planted.len() - unfixable.len();
    assert!(fixable > 0 && !unfixable.is_empty(), "{fixable} fixable");

    add_colour_field(&stack, &index).await;
    let redrive_group = unique("redrive");
    let (code, lines) = redrive(&stack, &topic, &index, &redrive_group, &[]);
    assert_eq!(code, 1, "some entries are refused again: {lines:?}");
    let summary = lines.last().unwrap();
    assert_eq!(summary["read"], json!(planted.len()), "{summary}");
    assert_eq!(
        summary["applied"].as_u64().unwrap() + summary["already_applied"].as_u64().unwrap(),
        fixable as u64,
        "{summary}"
    );
    assert_eq!(
        summary["refused_again"],
        json!(unfixable.len()),
        "{summary}"
    );
    assert_eq!(summary["moved_to"], json!(format!("{topic}.dlq.2")));
    assert_eq!(summary["committed"], json!(true));

    // The index equals the oracle in which the once-unknown field is valid: each redriven
    // command took the version of its origin, so none overwrote a newer state.
    let still_poison = unfixable.iter().map(|r| r.payload.clone()).collect();
    let expected = oracle(&records, &still_poison, Versions::Offset);
    assert_index_equals(&stack.new_es, &index, &expected).await;

    // The next generation holds exactly what was refused again, origin headers intact and one
    // attempt more.
    let originals: BTreeMap<(String, String), Value> = read_topic(&stack, &format!("{topic}.dlq"))
        .iter()
        .map(|l| {
            let h = &l.headers;
            (
                (
                    h["dual-indexer.source.partition"].clone(),
                    h["dual-indexer.source.offset"].clone(),
                ),
                json!(h),
            )
        })
        .collect();
    let moved = read_topic(&stack, &format!("{topic}.dlq.2"));
    assert_eq!(moved.len(), unfixable.len());
    for letter in &moved {
        let h = &letter.headers;
        let origin = (
            h["dual-indexer.source.partition"].clone(),
            h["dual-indexer.source.offset"].clone(),
        );
        let before = &originals[&origin];
        assert_eq!(h["dual-indexer.source.topic"], topic);
        assert_eq!(
            json!(h["dual-indexer.error.class"]),
            before["dual-indexer.error.class"]
        );
        let attempts: u32 = h["dual-indexer.attempts"].parse().unwrap();
        let attempts_before: u32 = before["dual-indexer.attempts"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(attempts, attempts_before + 1);
        let source = records
            .iter()
            .find(|r| (r.partition.to_string(), r.offset.to_string()) == origin)
            .unwrap();
        assert_eq!(letter.payload, source.payload, "payload kept byte for byte");
        assert_eq!(letter.key, source.key);
    }

    // Twice in a row: the group has read it all, so the second run changes nothing.
    let (code, lines) = redrive(&stack, &topic, &index, &redrive_group, &[]);
    assert_eq!(code, 0, "{lines:?}");
    let summary = lines.last().unwrap();
    assert_eq!(
        (summary["read"].clone(), summary["applied"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        read_topic(&stack, &format!("{topic}.dlq.2")).len(),
        unfixable.len()
    );
    assert_index_equals(&stack.new_es, &index, &expected).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redriven_upsert_never_brings_back_a_document_deleted_since() {
    let stack = stack();
    let (topic, index, group) = (unique("stale"), unique("tags-v2-stale"), unique("indexer"));
    let upsert = |id: &str| json!({"type": "upsert", "id": id, "tags": {"name": id}, "fields": {"colour": "red"}});
    let commands = [
        upsert("x"),                          // offset 0: refused (colour is not mapped)
        json!({"type": "delete", "id": "x"}), // offset 1: applied, a tombstone at version 1
        upsert("y"),                          // offset 2: refused, and y's newest command
    ];
    let messages: Vec<GeneratedMessage> = commands
        .iter()
        .map(|c| GeneratedMessage {
            key: Some(c["id"].as_str().unwrap().to_owned()),
            payload: serde_json::to_vec(c).unwrap(),
            poison: None,
        })
        .collect();
    produce_topic(&stack, &topic, 1, &messages).await;
    replay(&stack, &topic, &group, &index);
    let redrive_group = unique("redrive");

    // With the cause not fixed and --keep: both refused again, nothing moved, nothing committed.
    let (code, lines) = redrive(&stack, &topic, &index, &redrive_group, &["--keep"]);
    assert_eq!(code, 1);
    let summary = lines.last().unwrap();
    assert_eq!(summary["refused_again"], json!(2), "{summary}");
    assert_eq!(summary["committed"], json!(false), "{summary}");
    assert!(read_topic(&stack, &format!("{topic}.dlq.2")).is_empty());

    add_colour_field(&stack, &index).await;
    let (code, lines) = redrive(&stack, &topic, &index, &redrive_group, &[]);
    assert_eq!(code, 0, "{lines:?}");
    let outcome = |offset: i64| {
        lines
            .iter()
            .find(|l| l["source_offset"] == json!(offset))
            .map(|l| l["result"]["outcome"].clone())
            .unwrap()
    };
    assert_eq!(
        outcome(0),
        json!("already_applied"),
        "x was deleted at offset 1"
    );
    assert_eq!(outcome(2), json!("applied"));
    let stored = dump_index(&stack.new_es, &index).await;
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["y"], "x stays deleted");
    assert_eq!(stored["y"].version, 2);
}

/// Whether the source cluster's metadata lists `topic`.
fn topic_exists(stack: &Stack, topic: &str) -> bool {
    use rdkafka::consumer::BaseConsumer;
    let client: BaseConsumer = kafka_config(stack).create().expect("a metadata client");
    !dual_indexer::source::topics::partition_ids(&client, topic, Duration::from_secs(10))
        .expect("metadata")
        .is_empty()
}

/// `--dlq-kafka bootstrap.servers=…` puts the dead-letter topic on another cluster, so that is
/// where `run` creates it: the source cluster gets no dead-letter topic it never writes.
#[tokio::test(flavor = "multi_thread")]
async fn the_dead_letter_topic_is_created_on_the_cluster_its_letters_go_to() {
    let stack = stack();
    let messages = generated(200, 100, 61, 0);
    let mut seen = Vec::new();
    for elsewhere in [false, true] {
        let (topic, index, group) = (
            unique("dlq-where"),
            unique("tags-v2-dlq-where"),
            unique("indexer"),
        );
        produce_topic(&stack, &topic, 1, &messages).await;
        let mut command = indexer();
        command
            .args(run_args(&stack, &topic, &group, &index))
            .arg("--until-caught-up");
        if elsewhere {
            // Nothing listens there: the creation fails, and no letter is needed.
            command.args(["--dlq-kafka", "bootstrap.servers=127.0.0.1:1"]);
        }
        let mut child = command.guarded();
        assert!(wait_with_timeout(&mut child, Duration::from_secs(120)).success());
        let dlq = format!("{topic}.dlq");
        // With the default settings the topic is there once the run ends: the check below can
        // see a dead-letter topic that `run` created.
        assert_eq!(
            topic_exists(&stack, &dlq),
            !elsewhere,
            "dead-letter cluster elsewhere: {elsewhere}; `{dlq}` on the source cluster"
        );
        seen.push(format!(
            "{}: {}",
            if elsewhere {
                "elsewhere"
            } else {
                "same cluster"
            },
            if elsewhere { "absent" } else { "created" }
        ));
    }
    println!(
        "RESULT dead-letter topic's cluster: on the source cluster after a run with {}",
        seen.join("; ")
    );
}
