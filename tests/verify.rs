//! The legacy indexer mode and `verify`, against the real broker and two ES stand-ins: the legacy
//! and new indexers replay one topic side by side, and `verify` compares the clusters.

mod support;

use std::time::Duration;

use dual_indexer::generate::{self, GeneratedMessage, GeneratorSpec};
use serde_json::{json, Value};
use support::*;

fn verify(stack: &Stack, pair: &SideBySide, extra: &[&str]) -> (i32, String, Value) {
    let (mut command, report) = verify_command(stack, &pair.legacy_index, &pair.new_index, extra);
    checked_report(command.output().unwrap(), &report)
}

/// `verify` of two indices on the stack's clusters, writing its report to the returned path.
fn verify_command(
    stack: &Stack,
    legacy_index: &str,
    new_index: &str,
    extra: &[&str],
) -> (std::process::Command, std::path::PathBuf) {
    let report = std::env::temp_dir().join(format!("{}.json", unique("verify-report")));
    let mut command = indexer();
    command
        .args([
            "verify",
            "--legacy-url",
            &stack.legacy_es,
            "--legacy-index",
            legacy_index,
            "--es-url",
            &stack.new_es,
            "--index",
            new_index,
            "--report",
            report.to_str().unwrap(),
        ])
        .args(extra);
    if !extra.contains(&"--page-size") {
        command.args(["--page-size", "300"]);
    }
    (command, report)
}

/// The exit code, summary and report of a finished `verify`, with the report checked against
/// its schema and read by the cutover gate.
fn checked_report(output: std::process::Output, report: &std::path::Path) -> (i32, String, Value) {
    let summary = String::from_utf8(output.stdout).unwrap();
    println!("{summary}");
    let text = std::fs::read_to_string(report)
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
        dual_indexer::cutover::gate::read_report(report).expect("the gate reads the report");
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

/// Hot ids: the producer keeps updating and deleting them while `verify` runs.
const HOT: usize = 300;
/// Cold ids: written once, before the check.
const COLD: usize = 100;

/// Both indexers running on one topic, each in its own group, and a producer that keeps writing
/// to the hot ids at a steady rate until the value is dropped.
struct Live {
    topic: String,
    group: String,
    legacy_group: String,
    legacy_index: String,
    new_index: String,
    legacy: Guarded,
    _new: Guarded,
    traffic: Traffic,
}

/// A producer of updates and deletes to the hot ids, about 200 commands a second.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Traffic {
    fn start(stack: &Stack, topic: &str) -> Self {
        use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
        let producer: ThreadedProducer<rdkafka::producer::DefaultProducerContext> =
            kafka_config(stack)
                .set("linger.ms", "5")
                .create()
                .expect("a producer");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, topic) = (stop.clone(), topic.to_owned());
        let thread = std::thread::spawn(move || {
            let mut sent = 0u64;
            let mut state = 0x2545_f491_4f6c_dd1du64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // xorshift: a fixed, seeded walk over the hot ids.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let id = format!("hot-{:03}", state % HOT as u64);
                let payload = if state % 5 == 0 {
                    json!({"type": "delete", "id": id})
                } else {
                    json!({"type": "upsert", "id": id, "tags": {"owner": format!("team-{}", state % 7), "stage": format!("s{sent}")}})
                }
                .to_string();
                let record = BaseRecord::to(&topic).key(&id).payload(&payload);
                if producer.send(record).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = producer.flush(Duration::from_secs(10));
            sent
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the producer; how many commands it sent.
    fn stop(&mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .map_or(0, |t| t.join().expect("the producer thread"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Seeds the hot and cold ids, starts both indexers, waits until both have caught up with the
/// seed, then starts the traffic and lets it run for a few seconds.
async fn live(stack: &Stack) -> Live {
    let topic = unique("live");
    let ids = (0..HOT)
        .map(|i| format!("hot-{i:03}"))
        .chain((0..COLD).map(|i| format!("cold-{i:03}")));
    let seed: Vec<GeneratedMessage> = ids
        .map(|id| GeneratedMessage {
            payload:
                json!({"type": "upsert", "id": id, "tags": {"owner": "team-0", "stage": "seed"}})
                    .to_string()
                    .into_bytes(),
            key: Some(id),
            poison: None,
        })
        .collect();
    produce_topic(stack, &topic, 3, &seed).await;
    let (group, legacy_group) = (unique("indexer"), unique("legacy-indexer"));
    let (legacy_index, new_index) = (unique("tags-v1-live"), unique("tags-v2-live"));
    // The legacy indexer batches for longer, as a real one runs at its own pace: the two sides
    // apply each command at clearly different moments.
    let mut legacy_args = run_args_to(
        stack,
        &topic,
        &legacy_group,
        &legacy_index,
        &stack.legacy_es,
    );
    let linger = legacy_args
        .iter()
        .position(|a| a == "--linger-ms")
        .expect("run_args_to sets --linger-ms");
    legacy_args[linger + 1] = "200".into();
    let legacy = indexer()
        .args(legacy_args)
        .args(["--schema", "legacy"])
        .guarded();
    let new = indexer()
        .args(run_args(stack, &topic, &group, &new_index))
        .args(["--legacy-group", &legacy_group])
        .guarded();
    let total = seed.len() as i64;
    wait_for(
        "both indexers caught up with the seed",
        Duration::from_secs(180),
        || {
            (committed_total(stack, &group, &topic) == total
                && committed_total(stack, &legacy_group, &topic) == total)
                .then_some(())
        },
    );
    let traffic = Traffic::start(stack, &topic);
    std::thread::sleep(Duration::from_secs(3));
    Live {
        topic,
        group,
        legacy_group,
        legacy_index,
        new_index,
        legacy,
        _new: new,
        traffic,
    }
}

impl Live {
    /// `verify` with settling, while both indexers and the traffic run.
    fn verify_command(
        &self,
        stack: &Stack,
        extra: &[&str],
    ) -> (std::process::Command, std::path::PathBuf) {
        let mut args = vec![
            "--brokers",
            &stack.brokers,
            "--topic",
            &self.topic,
            "--group",
            &self.group,
            "--legacy-group",
            &self.legacy_group,
        ];
        args.extend_from_slice(extra);
        if !extra.contains(&"--page-size") {
            // Pages read one after another, while the traffic goes on.
            args.extend_from_slice(&["--page-size", "50"]);
        }
        verify_command(stack, &self.legacy_index, &self.new_index, &args)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn differences_that_are_only_lag_settle_while_both_indexers_are_live() {
    let stack = stack();
    let mut live = live(&stack).await;
    // Every check must be clean. Which documents a check catches in flight is chance (under a
    // loaded machine both indexers can stall together and agree), so up to three checks run
    // until one has settled something.
    let mut settled = 0;
    for attempt in 1..=3 {
        let (mut command, path) = live.verify_command(
            &stack,
            &["--sample-queries", "20", "--settle-timeout-secs", "60"],
        );
        let (code, summary, report) = checked_report(command.output().unwrap(), &path);
        assert_eq!(code, 0, "check {attempt}: {summary}");
        assert_eq!(report["clean"], json!(true), "{summary}");
        let docs = &report["documents"];
        assert_eq!(docs["differing_count"], json!(0), "{summary}");
        assert_eq!(docs["missing_in_new"]["count"], json!(0), "{summary}");
        assert_eq!(docs["only_in_new"]["count"], json!(0), "{summary}");
        assert_eq!(docs["unsettled"]["count"], json!(0), "{summary}");
        let settle = &report["settle"];
        assert_eq!(settle["settled"], docs["settled"], "{summary}");
        assert_eq!(settle["by_versions"], json!(true), "{summary}");
        assert_eq!(report["schema_version"], json!(2));
        assert_eq!(report["queries"]["different"], json!(0), "{summary}");
        assert_eq!(report["queries"]["unsettled"], json!(0), "{summary}");
        settled = docs["settled"].as_u64().unwrap();
        if settled > 0 {
            assert!(settle["rounds"].as_u64().unwrap() >= 1, "{summary}");
            break;
        }
    }
    let sent = live.traffic.stop();
    println!("the producer sent {sent} commands to {HOT} hot ids while the checks ran");
    assert!(
        settled > 0,
        "three checks settled no difference: the traffic never reached a check"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_difference_is_found_among_live_ones() {
    let stack = stack();
    let mut live = live(&stack).await;
    // Altered by hand in the new index, as an operator's plain write would: its version moves
    // on by one and its content differs.
    let planted = "cold-007";
    let dump = dump_index(&stack.new_es, &live.new_index).await;
    let mut source: Value = serde_json::from_str(&dump[planted].source).unwrap();
    source["tags"] = json!([{"keyToValue": dual_indexer::transform::key_to_value::encode("owner", "planted"), "value": "planted"},
        {"keyToValue": dual_indexer::transform::key_to_value::encode("stage", "seed"), "value": "seed"}]);
    bulk_ndjson(
        &stack.new_es,
        &live.new_index,
        &format!("{}\n{source}\n", json!({"index": {"_id": planted}})),
    )
    .await;
    let (mut command, path) = live.verify_command(
        &stack,
        &["--sample-queries", "0", "--settle-timeout-secs", "60"],
    );
    let (code, summary, report) = checked_report(command.output().unwrap(), &path);
    live.traffic.stop();
    assert_eq!(code, 1, "{summary}");
    let docs = &report["documents"];
    assert_eq!(docs["differing_count"], json!(1), "{summary}");
    let diff = &docs["differing"][0];
    assert_eq!(diff["id"], json!(planted), "{summary}");
    assert_eq!(
        diff["fields"],
        json!([{"field": "tags.owner", "legacy": "team-0", "new": "planted"}]),
        "{summary}"
    );
    // The version pair: the hand-made write moved the new side's version on by one.
    let (l, n) = (
        diff["versions"]["legacy"].as_u64().unwrap(),
        diff["versions"]["new"].as_u64().unwrap(),
    );
    assert_eq!(n, l + 1, "{summary}");
    assert_eq!(docs["missing_in_new"]["count"], json!(0), "{summary}");
    assert_eq!(docs["only_in_new"]["count"], json!(0), "{summary}");
    assert_eq!(docs["unsettled"]["count"], json!(0), "{summary}");
    assert_eq!(report["settle"]["different"], json!(1), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_legacy_indexer_leaves_live_differences_unsettled_and_named() {
    let stack = stack();
    let mut live = live(&stack).await;
    let (mut command, path) = live.verify_command(
        &stack,
        &[
            "--sample-queries",
            "0",
            "--settle-timeout-secs",
            "15",
            "--page-size",
            "5",
        ],
    );
    let child = command
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The legacy indexer stops dead while verify runs (SIGSTOP: no last commit, as a hung
    // process); the traffic goes on. A graceful stop drains and commits for a while, and the
    // scan could end before it.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &live.legacy.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let output = child.wait_with_output().unwrap();
    let (code, summary, report) = checked_report(output, &path);
    live.traffic.stop();
    assert_eq!(code, 1, "{summary}");
    let docs = &report["documents"];
    let unsettled = docs["unsettled"]["count"].as_u64().unwrap();
    assert!(unsettled > 0, "{summary}");
    assert_eq!(report["settle"]["unsettled"], json!(unsettled), "{summary}");
    for example in docs["unsettled"]["examples"].as_array().unwrap() {
        let reason = example["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("group `{}`", live.legacy_group)),
            "{example}"
        );
        assert!(reason.contains("stalled"), "{example}");
    }
    // Nothing was judged different: the stalled group kept every difference from a verdict.
    assert_eq!(docs["differing_count"], json!(0), "{summary}");
    assert_eq!(docs["missing_in_new"]["count"], json!(0), "{summary}");
    assert_eq!(docs["only_in_new"]["count"], json!(0), "{summary}");
    assert!(summary.contains(&live.legacy_group), "{summary}");
}
