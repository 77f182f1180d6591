//! Producers' own message formats, replayed from offset 0 through the real broker into the ES
//! stand-in, each compared with an oracle this file computes from what it produced (not with the
//! indexer's decoder): the three formats of `docs/envelope.md`, the dead letters of a mapping
//! that does not fit a message, and `envelope check`'s output.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use support::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// One message as a producer sends it.
struct Produced {
    key: Option<String>,
    value: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

/// Creates the topic and produces the messages in order (one request in flight, so each
/// partition keeps the order of `messages`).
async fn produce(stack: &Stack, topic: &str, partitions: i32, messages: &[Produced]) {
    let config = kafka_config(stack);
    dual_indexer::source::topics::ensure_topic(&config, topic, partitions)
        .await
        .unwrap();
    let producer: FutureProducer = config
        .clone()
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let values: Vec<Option<Vec<u8>>> = messages
        .iter()
        .map(|m| m.value.as_ref().map(|v| serde_json::to_vec(v).unwrap()))
        .collect();
    let mut deliveries = Vec::new();
    for (m, value) in messages.iter().zip(&values) {
        let mut headers = OwnedHeaders::new();
        for (name, v) in &m.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(v.as_bytes()),
            });
        }
        let mut record: FutureRecord<'_, String, Vec<u8>> =
            FutureRecord::to(topic).headers(headers);
        if let Some(key) = &m.key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        deliveries.push(producer.send(record, Duration::from_secs(30)));
    }
    for delivery in futures::future::join_all(deliveries).await {
        delivery.map_err(|(e, _)| e).unwrap();
    }
}

/// A small deterministic random source, independent of the crate's generator.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The expected new-schema document: tags as keyToValue pairs sorted by key, then the fields.
fn document(tags: &BTreeMap<String, String>, fields: &[(&str, Value)]) -> Value {
    let mut doc = json!({
        "tags": tags
            .iter()
            .map(|(k, v)| json!({"keyToValue": expected_key_to_value(k, v), "value": v}))
            .collect::<Vec<_>>()
    });
    for (name, value) in fields {
        doc[*name] = value.clone();
    }
    doc
}

/// The newest state per id, given (id, version, state) in delivery order per id: a higher
/// version wins, an equal or lower one is refused as Elasticsearch refuses it.
fn newest(
    events: impl IntoIterator<Item = (String, u64, Option<Value>)>,
) -> BTreeMap<String, Value> {
    let mut state: HashMap<String, (u64, Option<Value>)> = HashMap::new();
    for (id, version, doc) in events {
        if state.get(&id).is_none_or(|(v, _)| version > *v) {
            state.insert(id, (version, doc));
        }
    }
    state
        .into_iter()
        .filter_map(|(id, (_, doc))| doc.map(|d| (id, d)))
        .collect()
}

/// `dual-indexer envelope check` on `topic`, to be given more flags.
fn envelope_check(stack: &Stack, topic: &str) -> std::process::Command {
    let mut command = indexer();
    command.args([
        "envelope",
        "check",
        "--brokers",
        &stack.brokers,
        "--topic",
        topic,
    ]);
    command
}

/// Format 1's mapping written to a scratch file.
fn mapping_file() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique("nested-mapping")));
    std::fs::write(&path, NESTED_MAPPING).unwrap();
    path
}

fn run_until_caught_up(args: &[String]) -> String {
    let mut child = indexer().args(args).args(["--until-caught-up"]).guarded();
    let status = wait_with_timeout(&mut child, RUN_TIMEOUT);
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(status.success(), "indexer exited with {status}: {out}");
    out
}

fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Format 1's mapping, as a config file (arrays become repeated flags).
const NESTED_MAPPING: &str = r#"
id_from = ["/payload/uid"]
operation_from = "/meta/op"
operation = ["CREATE=upsert", "UPDATE=upsert", "REMOVE=delete"]
version_source = "/meta/seq"
tags_from = "/payload/tags"
tags_format = "pairs"
tag_key = "/k"
tag_value = "/v"
fields_from = "/payload"
rename_field = ["state=status"]
routing_from = "/payload/tenant"
"#;

/// Format 1: `{"meta": {"op", "seq"}, "payload": {"uid", "tenant", "title", "state", "tags": [{"k", "v"}]}}`,
/// with stale sequence numbers redelivered, and three messages the mapping cannot read.
fn nested_messages() -> (
    Vec<Produced>,
    BTreeMap<String, Value>,
    HashMap<String, String>,
) {
    let mut rng = Lcg(7);
    let (mut messages, mut events, mut tenants) = (Vec::new(), Vec::new(), HashMap::new());
    let mut seq: HashMap<String, u64> = HashMap::new();
    for n in 0..400 {
        let uid = format!("u-{}", rng.below(40));
        let tenant = format!("tenant-{}", uid.len() % 3 + uid.as_bytes()[2] as usize % 2);
        tenants.insert(uid.clone(), tenant.clone());
        let current = seq.entry(uid.clone()).or_insert(0);
        let version = if *current > 2 && rng.below(10) == 0 {
            *current - 2 // a stale redelivery: refused by the version
        } else {
            *current += 1;
            *current
        };
        let op = match rng.below(10) {
            0 | 1 => "REMOVE",
            2 => "CREATE",
            _ => "UPDATE",
        };
        let mut tags = BTreeMap::new();
        for _ in 0..=rng.below(4) {
            let key = ["name", "team", "env", "a:b"][rng.below(4) as usize];
            tags.insert(key.to_owned(), format!("v{}", rng.below(5)));
        }
        let pairs: Vec<Value> = tags.iter().map(|(k, v)| json!({"k": k, "v": v})).collect();
        let (title, state) = (format!("title {n}"), ["open", "closed"][n % 2]);
        messages.push(Produced {
            key: Some(uid.clone()),
            value: Some(json!({
                "meta": {"op": op, "seq": version, "producer": "crm"},
                "payload": {"uid": uid, "tenant": tenant, "title": title, "state": state, "tags": pairs}
            })),
            headers: Vec::new(),
        });
        let doc = (op != "REMOVE")
            .then(|| document(&tags, &[("title", json!(title)), ("status", json!(state))]));
        events.push((uid, version, doc));
    }
    let bad = [
        json!({"meta": {"op": "MERGE", "seq": 1}, "payload": {"uid": "u-1", "tenant": "t"}}),
        json!({"meta": {"op": "UPDATE", "seq": 1}, "payload": {"tenant": "t", "tags": []}}),
        json!({"meta": {"op": "UPDATE", "seq": 1}, "payload": {"uid": "u-2", "tenant": "t", "tags": {"k": "v"}}}),
    ];
    for value in bad {
        messages.push(Produced {
            key: Some("u-bad".into()),
            value: Some(value),
            headers: Vec::new(),
        });
    }
    (messages, newest(events), tenants)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nested_format_with_pairs_a_payload_version_and_routing_matches_its_oracle() {
    let stack = stack();
    let (topic, index, group) = (
        unique("nested"),
        unique("tags-v2-nested"),
        unique("indexer"),
    );
    let (messages, expected, tenants) = nested_messages();
    produce(&stack, &topic, 3, &messages).await;
    let config = mapping_file();

    let args = with(
        run_args(&stack, &topic, &group, &index),
        &["--config", config.to_str().unwrap()],
    );
    let summary = run_until_caught_up(&args);
    assert!(summary.contains("403 consumed"), "{summary}");
    assert_index_equals(&stack.new_es, &index, &expected).await;

    // Every document was written with its tenant as routing.
    let client = dual_indexer::es::client(&stack.new_es, Duration::from_secs(30)).unwrap();
    let (_, page) = dual_indexer::es::request(
        &client,
        elasticsearch::http::Method::Post,
        &format!("/{index}/_search"),
        Some(&json!({"size": 100, "query": {"match_all": {}}})),
    )
    .await
    .unwrap();
    let hits = page["hits"]["hits"].as_array().unwrap();
    assert_eq!(hits.len(), expected.len());
    for hit in hits {
        let id = hit["_id"].as_str().unwrap();
        assert_eq!(hit["_routing"], json!(tenants[id]), "{hit}");
    }

    // The three messages the mapping cannot read are dead-lettered, each naming its pointer.
    let letters = read_topic(&stack, &format!("{topic}.dlq"));
    let reasons: Vec<&str> = letters
        .iter()
        .map(|l| l.headers["dual-indexer.error.reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    for expected in [
        "operation `MERGE` at /meta/op is not mapped; mapped: CREATE, UPDATE, REMOVE",
        "no document id: the message has none of /payload/uid",
        "expected an array of {\"k\": …, \"v\": …} pairs at /payload/tags",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no reason says {expected:?}: {reasons:?}"
        );
    }
    for letter in &letters {
        assert_eq!(letter.headers["dual-indexer.source.topic"], topic);
        assert_eq!(letter.key.as_deref(), Some(b"u-bad".as_slice()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_id_in_the_key_and_the_version_in_a_header_matches_its_oracle() {
    let stack = stack();
    let (topic, index, group) = (unique("keyed"), unique("tags-v2-keyed"), unique("indexer"));
    let mut rng = Lcg(11);
    let (mut messages, mut events) = (Vec::new(), Vec::new());
    let mut versions: HashMap<String, u64> = HashMap::new();
    for n in 0..300 {
        let id = format!("doc-{}", rng.below(30));
        // Versions are a clock the producer stamps: increasing per document, with gaps, and
        // delivered out of order now and then.
        let v = versions.entry(id.clone()).or_insert(1_000);
        *v += 1 + rng.below(5);
        let version = if rng.below(8) == 0 { *v - 3 } else { *v };
        let event = if rng.below(6) == 0 {
            "Deleted"
        } else {
            "Saved"
        };
        let labels = json!({"team": format!("t{}", rng.below(3)), "level": rng.below(4)});
        let severity = ["low", "high"][n % 2];
        messages.push(Produced {
            key: Some(id.clone()),
            value: Some(json!({"event": event, "labels": labels, "severity": severity})),
            headers: vec![("x-version", version.to_string())],
        });
        let tags: BTreeMap<String, String> = [
            (
                "team".to_owned(),
                labels["team"].as_str().unwrap().to_owned(),
            ),
            ("level".to_owned(), labels["level"].to_string()),
        ]
        .into();
        let doc = (event == "Saved").then(|| document(&tags, &[("severity", json!(severity))]));
        events.push((id, version, doc));
    }
    produce(&stack, &topic, 2, &messages).await;
    let args = with(
        run_args(&stack, &topic, &group, &index),
        &[
            "--id-from",
            "key",
            "--version-source",
            "header:x-version",
            "--operation-from",
            "/event",
            "--operation",
            "Saved=upsert",
            "--operation",
            "Deleted=delete",
            "--tags-from",
            "/labels",
            "--fields-from",
            "",
        ],
    );
    let summary = run_until_caught_up(&args);
    assert!(summary.contains("300 consumed"), "{summary}");
    assert_index_equals(&stack.new_es, &index, &newest(events)).await;
    assert!(read_topic(&stack, &format!("{topic}.dlq")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_topic_with_tombstones_as_deletes_matches_its_oracle() {
    let stack = stack();
    let (topic, index, group) = (
        unique("compacted"),
        unique("tags-v2-compacted"),
        unique("indexer"),
    );
    let mut rng = Lcg(13);
    let mut messages = Vec::new();
    let mut last: HashMap<String, Option<Value>> = HashMap::new();
    for n in 0..250 {
        let id = format!("k-{}", rng.below(25));
        if rng.below(5) == 0 {
            messages.push(Produced {
                key: Some(id.clone()),
                value: None,
                headers: Vec::new(),
            });
            last.insert(id, None);
            continue;
        }
        let name = format!("n{}", rng.below(7));
        let title = format!("record {n}");
        messages.push(Produced {
            key: Some(id.clone()),
            value: Some(json!({"tags": {"name": name}, "title": title, "source": "cdc"})),
            headers: Vec::new(),
        });
        let tags: BTreeMap<String, String> = [("name".to_owned(), name)].into();
        last.insert(
            id,
            Some(document(
                &tags,
                &[("title", json!(title)), ("source", json!("cdc"))],
            )),
        );
    }
    // One partition: the offset orders every write, so the last message per key wins.
    produce(&stack, &topic, 1, &messages).await;
    let args = with(
        run_args(&stack, &topic, &group, &index),
        &[
            "--id-from",
            "key",
            "--default-operation",
            "upsert",
            "--operation-from",
            "/op",
            "--fields-from",
            "",
            "--tombstones",
            "delete",
        ],
    );
    let summary = run_until_caught_up(&args);
    assert!(summary.contains("250 consumed"), "{summary}");
    let expected: BTreeMap<String, Value> = last
        .into_iter()
        .filter_map(|(id, doc)| doc.map(|d| (id, d)))
        .collect();
    assert_index_equals(&stack.new_es, &index, &expected).await;
    assert!(read_topic(&stack, &format!("{topic}.dlq")).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn envelope_check_prints_what_each_message_would_become_and_writes_nothing() {
    let stack = stack();
    let topic = unique("envelope-check");
    let (mut messages, _, _) = nested_messages();
    // The first two valid messages, then the three the mapping cannot read.
    let bad = messages.split_off(400);
    messages.truncate(2);
    messages.extend(bad);
    produce(&stack, &topic, 1, &messages).await;
    let config = mapping_file();

    let out = envelope_check(&stack, &topic)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--sample",
            "4",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "some would be dead-lettered");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "--sample 4 reads four messages: {lines:?}");
    let first = messages[0].value.as_ref().unwrap();
    assert_eq!(lines[0]["offset"], json!(0));
    assert_eq!(lines[0]["id"], first["payload"]["uid"]);
    assert_eq!(lines[0]["version"], first["meta"]["seq"]);
    assert_eq!(lines[0]["routing"], first["payload"]["tenant"]);
    let outcome = |op: &Value| if op == "REMOVE" { "delete" } else { "upsert" };
    assert_eq!(lines[0]["outcome"], json!(outcome(&first["meta"]["op"])));
    assert_eq!(lines[2]["outcome"], json!("dead-letter"));
    assert_eq!(lines[2]["class"], json!("decode"));
    assert!(
        lines[2]["reason"]
            .as_str()
            .unwrap()
            .contains("`MERGE` at /meta/op"),
        "{:?}",
        lines[2]
    );
    assert!(
        lines[3]["reason"]
            .as_str()
            .unwrap()
            .contains("/payload/uid"),
        "{:?}",
        lines[3]
    );

    // The text form shows the mapping and a summary, and a bad mapping is refused naming its flag.
    let text = envelope_check(&stack, &topic)
        .args(["--config", config.to_str().unwrap(), "--sample", "2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(text.stdout).unwrap();
    assert_eq!(text.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("mapping: id from /payload/uid; operation at /meta/op"),
        "{stdout}"
    );
    assert!(stdout.contains("0/0  "), "{stdout}");
    assert!(stdout.contains("2 message(s): "), "{stdout}");
    let refused = envelope_check(&stack, &topic)
        .args([
            "--tombstones",
            "delete",
            "--version-source",
            "/meta/seq",
            "--id-from",
            "key",
        ])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8(refused.stderr).unwrap();
    assert!(
        stderr.contains("--tombstones delete with --version-source /meta/seq"),
        "{stderr}"
    );
}

#[test]
fn the_example_mapping_file_is_the_mapping_of_the_nested_format() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/nested-mapping.toml"
    );
    let argv = ["dual-indexer", "envelope", "check", "--config", example].map(Into::into);
    let (cli, _) =
        dual_indexer::config::parse::<dual_indexer::commands::Cli>(argv.to_vec()).unwrap();
    let dual_indexer::commands::Command::Envelope(
        dual_indexer::commands::envelope::EnvelopeCommand::Check(args),
    ) = cli.command
    else {
        panic!("parsed another subcommand");
    };
    assert_eq!(
        args.envelope.mapping(),
        dual_indexer::generate::nested::mapping()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_format_and_its_example_mapping_replay_to_the_oracle() {
    let stack = stack();
    let (topic, index, group) = (
        unique("demo-nested"),
        unique("tags-v2-demo"),
        unique("indexer"),
    );
    let spec = dual_indexer::generate::GeneratorSpec {
        count: 2_000,
        ids: 300,
        tags: 5,
        seed: 3,
        poison_every: 0,
    };
    let produced = indexer()
        .args([
            "generate",
            "--brokers",
            &stack.brokers,
            "--topic",
            &topic,
            "--format",
            "nested",
        ])
        .args([
            "--count",
            "2000",
            "--ids",
            "300",
            "--tags",
            "5",
            "--seed",
            "3",
            "--poison-every",
            "0",
        ])
        .output()
        .unwrap();
    assert!(produced.status.success());
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/examples/nested-mapping.toml"
    );
    let check = envelope_check(&stack, &topic)
        .args(["--config", example, "--sample", "200"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(check.stdout).unwrap();
    assert_eq!(check.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("200 message(s): "), "{stdout}");

    let args = with(
        run_args(&stack, &topic, &group, &index),
        &["--config", example],
    );
    let summary = run_until_caught_up(&args);
    assert!(summary.contains("2000 consumed"), "{summary}");
    // The oracle reads the same commands in the built-in envelope, with the test's own decoder.
    let records: Vec<Record> = dual_indexer::generate::messages(&spec)
        .into_iter()
        .enumerate()
        .map(|(n, m)| Record {
            partition: 0,
            offset: n as i64,
            key: m.key.map(String::into_bytes),
            payload: m.payload,
            headers: HashMap::new(),
            timestamp: None,
        })
        .collect();
    let expected = oracle(&records, &Default::default(), Versions::Field);
    assert_index_equals(&stack.new_es, &index, &expected).await;
}
