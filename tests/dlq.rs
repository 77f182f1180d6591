//! `dlq show` against the dead-letter topic a real replay wrote: the counts and the entries
//! equal what the test planted, counted from the generator's own poison labels.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

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
    let mut child = indexer()
        .args(run_args(&stack, &topic, &group, &index))
        .arg("--until-caught-up")
        .guarded();
    assert!(wait_with_timeout(&mut child, Duration::from_secs(180)).success());

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
