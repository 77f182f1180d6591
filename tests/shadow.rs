//! `shadow` and the query translator against the real broker and two ES stand-ins: the legacy
//! and new indexers replay one topic side by side, the proxy stands in front of the legacy
//! cluster, and a corpus with every supported construct goes through it from a real HTTP client.
//! Each query is checked three ways: the legacy answer comes back byte for byte, the report
//! classes it as the hits say it should be, and the translated query's hits on the new cluster
//! are what an oracle computed from the command history says.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dual_indexer::generate::{self, GeneratorSpec};
use serde_json::{json, Value};
use support::fault_proxy::{FaultProxy, Plan};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A document of the oracle, in the new shape: its tags by key, and its fields.
struct Doc<'a> {
    tags: BTreeMap<String, String>,
    source: &'a Value,
}

impl<'a> Doc<'a> {
    fn new(source: &'a Value) -> Self {
        let tags = source["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                let (kv, value) = (
                    t["keyToValue"].as_str().unwrap(),
                    t["value"].as_str().unwrap(),
                );
                let escaped = &kv[..kv.len() - value.len() - 1];
                (
                    escaped.replace("\\:", ":").replace("\\\\", "\\"),
                    value.to_owned(),
                )
            })
            .collect();
        Self { tags, source }
    }

    fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    fn tag_in(&self, key: &str, values: &[&str]) -> bool {
        self.tag(key).is_some_and(|v| values.contains(&v))
    }

    fn field(&self, name: &str) -> &str {
        self.source[name].as_str().unwrap_or_default()
    }

    /// The words of every tag value, as the standard analyser finds them in the generator's values.
    fn has_word(&self, word: &str) -> bool {
        self.tags
            .values()
            .any(|v| words(v).iter().any(|w| w == word))
    }

    fn has_phrase(&self, phrase: &[&str]) -> bool {
        self.tags
            .values()
            .any(|v| words(v).windows(phrase.len()).any(|w| w == phrase))
    }
}

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// What a case measures in an answer: the ids of all hits, a `_count`, the sort values of a
/// sorted page, or the buckets of an aggregation.
#[derive(Debug, Clone, PartialEq)]
enum Measure {
    Ids(BTreeSet<String>),
    Count(u64),
    Page(Vec<String>),
    Buckets(BTreeMap<String, u64>),
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Ids,
    Count,
    Page,
    Buckets,
}

fn measure(kind: Kind, answer: &Value) -> Measure {
    let hits = || {
        answer["hits"]["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    match kind {
        Kind::Ids => Measure::Ids(
            hits()
                .iter()
                .map(|h| h["_id"].as_str().unwrap().to_owned())
                .collect(),
        ),
        Kind::Count => Measure::Count(
            answer["count"]
                .as_u64()
                .unwrap_or_else(|| panic!("no count in {answer}")),
        ),
        Kind::Page => Measure::Page(
            hits()
                .iter()
                .map(|h| h["_source"]["updated_at"].as_str().unwrap().to_owned())
                .collect(),
        ),
        Kind::Buckets => {
            let mut out = BTreeMap::new();
            for b in answer["aggregations"]["by_status"]["buckets"]
                .as_array()
                .unwrap()
            {
                let key = b["key"].as_str().unwrap();
                out.insert(key.to_owned(), b["doc_count"].as_u64().unwrap());
                out.insert(format!("{key}/p2"), b["p2"]["doc_count"].as_u64().unwrap());
            }
            Measure::Buckets(out)
        }
    }
}

type Predicate = Box<dyn Fn(&Doc) -> bool>;

/// One legacy search of the corpus.
struct Case {
    name: &'static str,
    /// `_search` or `_count`.
    endpoint: &'static str,
    body: Value,
    kind: Kind,
    /// What `translate` says: `exact`, `analysis` or `untranslatable`.
    translation: &'static str,
    /// The documents the translated search finds.
    oracle: Predicate,
}

fn case(
    name: &'static str,
    translation: &'static str,
    query: Value,
    oracle: impl Fn(&Doc) -> bool + 'static,
) -> Case {
    Case {
        name,
        endpoint: "_search",
        body: json!({"query": query, "size": 1000}),
        kind: Kind::Ids,
        translation,
        oracle: Box::new(oracle),
    }
}

/// Every supported construct, and two the translator refuses.
fn corpus() -> Vec<Case> {
    vec![
        case(
            "term on a key",
            "analysis",
            json!({"term": {"actions.tags.name": "john"}}),
            |d| d.tag("name") == Some("john"),
        ),
        case(
            "terms on a key",
            "analysis",
            json!({"terms": {"actions.tags.owner": ["p2", "john"]}}),
            |d| d.tag_in("owner", &["p2", "john"]),
        ),
        case(
            "match on a key",
            "analysis",
            json!({"match": {"actions.tags.name": "John Smith"}}),
            |d| d.tag_in("name", &["John Smith", "john smith"]),
        ),
        case(
            "match with punctuation",
            "analysis",
            json!({"match": {"actions.tags.note": {"query": "N/A", "operator": "and"}}}),
            |d| d.tag_in("note", &["N/A", "n/a"]),
        ),
        case(
            "match without words",
            "exact",
            json!({"match": {"actions.tags.note": "!!!"}}),
            |_| false,
        ),
        case(
            "match_phrase on a key",
            "analysis",
            json!({"match_phrase": {"actions.tags.team": "Payments Team"}}),
            |d| d.tag_in("team", &["Payments Team", "payments team"]),
        ),
        case(
            "prefix on a key",
            "analysis",
            json!({"prefix": {"actions.tags.host": "web"}}),
            |d| d.tag("host").is_some_and(|v| v.starts_with("web")),
        ),
        case(
            "wildcard on a key",
            "analysis",
            json!({"wildcard": {"actions.tags.region": {"value": "*east*"}}}),
            |d| d.tag("region").is_some_and(|v| v.contains("east")),
        ),
        case(
            "exists on a key",
            "exact",
            json!({"exists": {"field": "actions.tags.Priority"}}),
            |d| d.tag("Priority").is_some(),
        ),
        case(
            "query_string over every tag",
            "exact",
            json!({"query_string": {"fields": ["actions.tags.*"], "query": "alice OR sever"}}),
            |d| d.has_word("alice") || d.has_word("sever"),
        ),
        case(
            "simple_query_string phrase",
            "exact",
            json!({"simple_query_string": {"fields": ["actions.tags.*"], "query": "\"john smith\""}}),
            |d| d.has_phrase(&["john", "smith"]),
        ),
        case(
            "bool with every occurrence",
            "analysis",
            json!({"bool": {
                "must": [{"match": {"actions.tags.env": "eu-west-1"}}],
                "filter": [{"term": {"status": "open"}}],
                "should": [{"exists": {"field": "actions.tags.team"}}, {"prefix": {"actions.tags.host": "db"}}],
                "minimum_should_match": 1,
                "must_not": [{"exists": {"field": "actions.tags.note"}}]
            }}),
            |d| {
                d.tag("env") == Some("eu-west-1")
                    && d.field("status") == "open"
                    && (d.tag("team").is_some()
                        || d.tag("host").is_some_and(|h| h.starts_with("db")))
                    && d.tag("note").is_none()
            },
        ),
        case(
            "must_not widens",
            "analysis",
            json!({"bool": {"must_not": {"match": {"actions.tags.name": "john"}}}}),
            |d| d.tag("name") != Some("john"),
        ),
        case(
            "constant_score",
            "analysis",
            json!({"constant_score": {"filter": {"match": {"actions.tags.region": "us-east-1"}}, "boost": 2}}),
            |d| d.tag("region") == Some("us-east-1"),
        ),
        case(
            "nested elsewhere",
            "analysis",
            json!({"nested": {"path": "comments", "ignore_unmapped": true, "query": {"match": {"actions.tags.env": "p2"}}}}),
            |_| false,
        ),
        case(
            "shared fields only",
            "exact",
            json!({"bool": {"filter": [{"term": {"severity": "high"}}, {"match": {"title": "disk"}}]}}),
            |d| {
                d.field("severity") == "high"
                    && words(d.field("title")).contains(&"disk".to_owned())
            },
        ),
        Case {
            name: "_source, sort, from and size",
            endpoint: "_search",
            body: json!({"query": {"exists": {"field": "actions.tags.env"}}, "_source": ["actions.tags.*", "updated_at"],
                "sort": [{"updated_at": "desc"}], "from": 3, "size": 7}),
            kind: Kind::Page,
            translation: "exact",
            oracle: Box::new(|d| d.tag("env").is_some()),
        },
        Case {
            name: "aggregations",
            endpoint: "_search",
            body: json!({"size": 0, "query": {"exists": {"field": "actions.tags.env"}},
                "aggs": {"by_status": {"terms": {"field": "status"}, "aggs": {"p2": {"filter": {"term": {"actions.tags.env": "p2"}}}}}}}),
            kind: Kind::Buckets,
            translation: "analysis",
            oracle: Box::new(|d| d.tag("env").is_some()),
        },
        Case {
            name: "_count",
            endpoint: "_count",
            body: json!({"query": {"match": {"actions.tags.owner": "Alice"}}}),
            kind: Kind::Count,
            translation: "analysis",
            oracle: Box::new(|d| d.tag_in("owner", &["Alice", "alice"])),
        },
        case(
            "untranslatable: words of one key",
            "untranslatable",
            json!({"query_string": {"fields": ["actions.tags.name"], "query": "john"}}),
            |_| false,
        ),
        case(
            "untranslatable: a term that is not a word",
            "untranslatable",
            json!({"term": {"actions.tags.name": "John"}}),
            |_| false,
        ),
    ]
}

/// The oracle's answer to a case, measured like an answer.
fn expected(case: &Case, docs: &BTreeMap<String, Value>) -> Measure {
    let matching: Vec<(&String, &Value)> = docs
        .iter()
        .filter(|(_, d)| (case.oracle)(&Doc::new(d)))
        .collect();
    match case.kind {
        Kind::Ids => Measure::Ids(matching.iter().map(|(id, _)| (*id).clone()).collect()),
        Kind::Count => Measure::Count(matching.len() as u64),
        Kind::Page => {
            let mut dates: Vec<String> = matching
                .iter()
                .map(|(_, d)| d["updated_at"].as_str().unwrap().to_owned())
                .collect();
            dates.sort_unstable_by(|a, b| b.cmp(a));
            Measure::Page(dates.into_iter().skip(3).take(7).collect())
        }
        Kind::Buckets => {
            let mut out = BTreeMap::new();
            for (_, d) in &matching {
                let doc = Doc::new(d);
                *out.entry(doc.field("status").to_owned()).or_insert(0) += 1;
                *out.entry(format!("{}/p2", doc.field("status")))
                    .or_insert(0) += u64::from(doc.tag("env") == Some("p2"));
            }
            Measure::Buckets(out)
        }
    }
}

/// The class the shadow report must give: the legacy and the oracle's measures agree, or differ
/// only in the direction the translation approximates.
fn expected_class(case: &Case, legacy: &Measure, oracle: &Measure) -> &'static str {
    if case.translation == "untranslatable" {
        return "untranslatable";
    }
    if legacy == oracle {
        return "equal";
    }
    assert_eq!(
        case.translation, "analysis",
        "{}: an exact translation finds other documents: legacy {legacy:?}, oracle {oracle:?}",
        case.name
    );
    let widens = case.name == "must_not widens";
    let within = match (legacy, oracle) {
        (Measure::Ids(l), Measure::Ids(o)) if widens => l.is_subset(o),
        (Measure::Ids(l), Measure::Ids(o)) => o.is_subset(l),
        (Measure::Count(l), Measure::Count(o)) => o <= l,
        (Measure::Buckets(l), Measure::Buckets(o)) => {
            o.iter().all(|(k, v)| l.get(k).is_some_and(|l| v <= l))
        }
        _ => false,
    };
    assert!(within, "{}: the oracle's hits are not within the legacy hits: legacy {legacy:?}, oracle {oracle:?}", case.name);
    "analysis"
}

/// A TCP relay that records every byte each side sends, to prove the proxy's answers are the
/// legacy cluster's bytes and its requests carry the application's credentials.
#[derive(Clone)]
struct Tap {
    url: String,
    sent: Arc<Mutex<Vec<u8>>>,
    received: Arc<Mutex<Vec<u8>>>,
}

/// Copies `from` to `to`, keeping a copy of every byte in `record`.
async fn relay(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    record: &Mutex<Vec<u8>>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        record.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

impl Tap {
    async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let (sent, received) = (
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Vec::new())),
        );
        let (up_record, down_record) = (Arc::clone(&sent), Arc::clone(&received));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut server = TcpStream::connect(&upstream).await.unwrap();
                let (up_record, down_record) = (Arc::clone(&up_record), Arc::clone(&down_record));
                tokio::spawn(async move {
                    let (cr, cw) = client.split();
                    let (sr, sw) = server.split();
                    tokio::select! {
                        _ = relay(cr, sw, &up_record) => {},
                        _ = relay(sr, cw, &down_record) => {},
                    }
                });
            }
        });
        Self {
            url,
            sent,
            received,
        }
    }

    fn saw(&self, body: &[u8]) -> bool {
        memchr::memmem::find(&self.received.lock().unwrap(), body).is_some()
    }

    fn was_sent(&self, bytes: &[u8]) -> bool {
        memchr::memmem::find(&self.sent.lock().unwrap(), bytes).is_some()
    }
}

/// A running `shadow` proxy.
struct Shadow {
    child: Guarded,
    url: String,
    report: std::path::PathBuf,
}

impl Shadow {
    fn start(legacy: (&str, &str), new: &str, index: &str, extra: &[&str]) -> Self {
        let port = free_port();
        let report = std::env::temp_dir().join(format!("{}.jsonl", unique("shadow-report")));
        let child = indexer()
            .args([
                "shadow",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--legacy-url",
                legacy.0,
                "--legacy-index",
                legacy.1,
                "--es-url",
                new,
                "--index",
                index,
            ])
            .args(["--report", report.to_str().unwrap()])
            .args(extra)
            .guarded();
        wait_for(
            "the shadow proxy to listen",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            report,
        }
    }

    /// Stops the proxy and returns its summary line.
    fn stop(mut self) -> String {
        terminate(&self.child);
        let stdout = self.child.0.stdout.take().unwrap();
        let out = read_in_background(stdout).join().unwrap();
        assert!(
            wait_with_timeout(&mut self.child, Duration::from_secs(30)).success(),
            "{out}"
        );
        out.lines()
            .find(|l| l.starts_with("shadow: ") && l.contains("requests"))
            .unwrap_or_else(|| panic!("no summary in {out}"))
            .to_owned()
    }

    fn entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.report)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The number before `label` in the proxy's summary line.
fn summary_count(summary: &str, label: &str) -> u64 {
    let before = &summary[..summary
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in {summary}"))];
    before
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
    ndjson: bool,
) -> (u16, Vec<u8>, Duration) {
    let started = Instant::now();
    let response = client
        .post(url)
        .header(
            "content-type",
            if ndjson {
                "application/x-ndjson"
            } else {
                "application/json"
            },
        )
        .body(body.to_vec())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap().to_vec();
    (status, bytes, started.elapsed())
}

fn translate_class(body: &Value) -> String {
    let mut child = indexer()
        .args(["translate", "--json"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all_blocking(body.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(if parsed["class"] == "untranslatable" {
            1
        } else {
            0
        }),
        "{parsed}"
    );
    parsed["class"].as_str().unwrap().to_owned()
}

trait WriteAllBlocking {
    fn write_all_blocking(self, bytes: &[u8]);
}

impl WriteAllBlocking for std::process::ChildStdin {
    fn write_all_blocking(mut self, bytes: &[u8]) {
        std::io::Write::write_all(&mut self, bytes).unwrap();
    }
}

fn messages() -> Vec<dual_indexer::generate::GeneratedMessage> {
    generate::messages(&GeneratorSpec {
        count: 900,
        ids: 300,
        seed: 18,
        ..GeneratorSpec::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_construct_answers_byte_identical_is_classed_and_matches_the_oracle() {
    let stack = stack();
    let messages = messages();
    let pair = replay_both(&stack, &messages).await;
    let docs = oracle(
        &read_topic(&stack, &pair.topic),
        &poison_payloads(&messages),
        Versions::Offset,
    );
    dual_indexer::es::refresh(
        &dual_indexer::es::client(&stack.legacy_es, Duration::from_secs(30)).unwrap(),
        &pair.legacy_index,
    )
    .await
    .unwrap();
    let tap = Tap::start(&stack.legacy_es).await;
    let shadow = Shadow::start(
        (&tap.url, &pair.legacy_index),
        &stack.new_es,
        &pair.new_index,
        &["--sample", "1"],
    );
    let client = reqwest::Client::new();
    let corpus = corpus();
    let mut expected_classes = BTreeMap::new();
    for case in &corpus {
        assert_eq!(
            translate_class(&case.body),
            case.translation,
            "`translate` on {}",
            case.name
        );
        let body = case.body.to_string();
        // `pretty` makes the legacy answer's bytes its own: a proxy that parsed and re-encoded
        // it would be seen.
        let (status, bytes, _) = post(
            &client,
            &format!(
                "{}/{}/{}?pretty",
                shadow.url, pair.legacy_index, case.endpoint
            ),
            body.as_bytes(),
            false,
        )
        .await;
        assert!(
            tap.saw(&bytes),
            "{}: the proxy's answer is not the legacy cluster's bytes",
            case.name
        );
        let legacy: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, 200, "{}: {legacy}", case.name);
        let oracle = expected(case, &docs);
        expected_classes.insert(
            body.clone(),
            (
                case.name,
                expected_class(case, &measure(case.kind, &legacy), &oracle),
            ),
        );
        if case.translation == "untranslatable" {
            continue;
        }
        let translated = dual_indexer::translate::search_body(&case.body)
            .unwrap()
            .body;
        let (status, new, _) = post(
            &client,
            &format!("{}/{}/{}", stack.new_es, pair.new_index, case.endpoint),
            translated.to_string().as_bytes(),
            false,
        )
        .await;
        let new: Value = serde_json::from_slice(&new).unwrap();
        assert_eq!(status, 200, "{}: {new}", case.name);
        assert_eq!(
            measure(case.kind, &new),
            oracle,
            "{}: the translated search {translated} disagrees with the oracle",
            case.name
        );
    }
    // An _msearch of two corpus searches, answered and classed as a whole.
    let ms = format!(
        "{{}}\n{}\n{{\"index\": \"{}\"}}\n{}\n",
        corpus[0].body, pair.legacy_index, corpus[9].body
    );
    let (status, bytes, _) = post(
        &client,
        &format!("{}/{}/_msearch?pretty", shadow.url, pair.legacy_index),
        ms.as_bytes(),
        true,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        tap.saw(&bytes),
        "the _msearch answer is not the legacy cluster's bytes"
    );
    let classes: Vec<&str> = ["term on a key", "query_string over every tag"]
        .iter()
        .map(|n| {
            expected_classes
                .values()
                .find(|(name, _)| name == n)
                .unwrap()
                .1
        })
        .collect();
    let msearch_class = if classes.contains(&"analysis") {
        "analysis"
    } else {
        "equal"
    };
    // The application's credentials reach the legacy cluster as they came.
    let status = client
        .get(format!("{}/_cluster/health", shadow.url))
        .header("authorization", "Basic YXBwOnNlY3JldA==")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert!(
        tap.was_sent(b"authorization: Basic YXBwOnNlY3JldA=="),
        "the credentials did not pass through"
    );
    // Reads of every index are not the legacy index's: they pass through, unshadowed.
    let (status, _, _) = post(&client, &format!("{}/_count", shadow.url), b"", false).await;
    assert_eq!(status, 200);
    // Writes and admin calls pass through, unshadowed.
    let (status, _, _) = post(
        &client,
        &format!("{}/{}/_refresh", shadow.url, pair.legacy_index),
        b"",
        false,
    )
    .await;
    assert_eq!(status, 200);
    let summary = shadow_settled(&shadow, corpus.len() + 1);
    let entries = shadow.entries();
    let summary_line = shadow.stop();
    println!("{summary_line}\n{summary}");
    for entry in &entries {
        let got = entry["class"].as_str().unwrap();
        if entry["endpoint"] == "_msearch" {
            assert_eq!(got, msearch_class, "_msearch: {entry}");
            continue;
        }
        let (name, want) = expected_classes[entry["query"].as_str().unwrap()];
        assert_eq!(got, want, "{name}: the report says {entry}");
        if got != "equal" {
            assert!(
                entry["legacy_answer"].is_string()
                    && entry["differences"]
                        .as_array()
                        .is_some_and(|d| !d.is_empty()),
                "{name}: {entry}"
            );
        }
        assert!(entry["legacy_ms"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(
        summary_count(&summary_line, "requests"),
        corpus.len() as u64 + 4
    );
    assert_eq!(
        summary_count(&summary_line, "sampled"),
        corpus.len() as u64 + 1
    );
}

/// Waits until the report holds `n` entries, and tallies them by class.
fn shadow_settled(shadow: &Shadow, n: usize) -> String {
    let entries = wait_for("the shadow report", Duration::from_secs(30), || {
        let e = shadow.entries();
        (e.len() >= n).then_some(e)
    });
    let mut by_class: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entries {
        *by_class
            .entry(e["class"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    format!("report: {by_class:?}")
}

/// Latency percentiles of a run of requests, in milliseconds.
fn percentiles(mut samples: Vec<Duration>) -> (f64, f64, f64) {
    samples.sort_unstable();
    let at =
        |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;
    (at(0.5), at(0.99), at(1.0))
}

async fn latencies(client: &reqwest::Client, url: &str, n: usize) -> Vec<Duration> {
    let body =
        json!({"query": {"match": {"actions.tags.name": "John Smith"}}, "size": 20}).to_string();
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (status, _, elapsed) = post(client, url, body.as_bytes(), false).await;
        assert_eq!(status, 200);
        out.push(elapsed);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_or_dead_new_cluster_never_slows_the_legacy_path() {
    let stack = stack();
    let messages = generate::messages(&GeneratorSpec {
        count: 300,
        ids: 100,
        seed: 81,
        ..GeneratorSpec::default()
    });
    let pair = replay_both(&stack, &messages).await;
    let client = reqwest::Client::new();
    let search = |base: &str| format!("{base}/{}/_search", pair.legacy_index);
    const N: usize = 200;
    let _ = latencies(&client, &search(&stack.legacy_es), 20).await;
    let direct = percentiles(latencies(&client, &search(&stack.legacy_es), N).await);

    let healthy = Shadow::start(
        (&stack.legacy_es, &pair.legacy_index),
        &stack.new_es,
        &pair.new_index,
        &["--sample", "1"],
    );
    let through_healthy = percentiles(latencies(&client, &search(&healthy.url), N).await);
    let healthy_summary = healthy.stop();

    // Every shadow answer takes 800 ms, past the 300 ms shadow timeout.
    let slow_cluster = FaultProxy::start(
        &stack.new_es,
        Plan {
            latency: Duration::from_millis(800),
            ..Plan::default()
        },
    )
    .await;
    let slow = Shadow::start(
        (&stack.legacy_es, &pair.legacy_index),
        &slow_cluster.url,
        &pair.new_index,
        &[
            "--sample",
            "1",
            "--shadow-timeout-ms",
            "300",
            "--shadow-concurrency",
            "4",
        ],
    );
    let through_slow = percentiles(latencies(&client, &search(&slow.url), N).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let slow_summary = slow.stop();

    // Nothing listens where the new cluster should be.
    let dead = Shadow::start(
        (&stack.legacy_es, &pair.legacy_index),
        &format!("http://127.0.0.1:{}", free_port()),
        &pair.new_index,
        &["--sample", "1"],
    );
    let through_dead = percentiles(latencies(&client, &search(&dead.url), N).await);
    let dead_summary = dead.stop();

    println!("legacy latency over {N} searches, p50 / p99 / max ms:");
    for (name, (p50, p99, max)) in [
        ("direct", direct),
        ("proxy, new healthy", through_healthy),
        ("proxy, new slow", through_slow),
        ("proxy, new dead", through_dead),
    ] {
        println!("  {name:20} {p50:6.2} {p99:6.2} {max:6.2}");
    }
    println!("{healthy_summary}\n{slow_summary}\n{dead_summary}");
    // Waiting for the slow cluster would cost at least the 300 ms timeout per request.
    for (name, (p50, _, max)) in [("slow", through_slow), ("dead", through_dead)] {
        assert!(max < 250.0, "{name}: a legacy answer took {max:.1} ms");
        assert!(
            p50 < through_healthy.0 * 3.0 + 5.0,
            "{name}: p50 {p50:.2} ms against {:.2} ms with a healthy new cluster",
            through_healthy.0
        );
    }
    // Every sample is accounted for. Under the load of the other tests a healthy new cluster
    // can still be late for a few.
    let compared =
        summary_count(&healthy_summary, "equal") + summary_count(&healthy_summary, "analysis");
    let dropped =
        summary_count(&healthy_summary, "busy") + summary_count(&healthy_summary, "timeout");
    assert!(compared > N as u64 / 2, "{healthy_summary}");
    assert_eq!(compared + dropped, N as u64, "{healthy_summary}");
    let dropped = summary_count(&slow_summary, "busy") + summary_count(&slow_summary, "timeout");
    assert!(
        summary_count(&slow_summary, "timeout") >= 1,
        "{slow_summary}"
    );
    assert_eq!(
        dropped, N as u64,
        "every sample of the slow cluster is dropped: {slow_summary}"
    );
    // A refused connection is an `error` at once; only a busy moment drops one.
    let errors = summary_count(&dead_summary, "error;");
    assert!(errors > N as u64 / 2, "{dead_summary}");
    assert_eq!(
        errors + summary_count(&dead_summary, "busy"),
        N as u64,
        "{dead_summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_read_canary_answers_exact_reads_from_the_new_cluster_in_the_legacy_shape() {
    let stack = stack();
    let messages = generate::messages(&GeneratorSpec {
        count: 300,
        ids: 100,
        seed: 11,
        ..GeneratorSpec::default()
    });
    let pair = replay_both(&stack, &messages).await;
    let client = reqwest::Client::new();
    let canary = Shadow::start(
        (&stack.legacy_es, &pair.legacy_index),
        &stack.new_es,
        &pair.new_index,
        &["--sample", "0", "--serve-from", "new", "--share", "1"],
    );
    let exact = json!({"query": {"query_string": {"fields": ["actions.tags.*"], "query": "john"}}, "size": 1000}).to_string();
    let narrowed =
        json!({"query": {"match": {"actions.tags.name": "john"}}, "size": 1000}).to_string();
    let sources = |answer: &[u8]| -> (BTreeMap<String, Value>, BTreeSet<String>) {
        let v: Value = serde_json::from_slice(answer).unwrap();
        let hits = v["hits"]["hits"].as_array().unwrap().clone();
        (
            hits.iter()
                .map(|h| (h["_id"].as_str().unwrap().to_owned(), h["_source"].clone()))
                .collect(),
            hits.iter()
                .map(|h| h["_index"].as_str().unwrap().to_owned())
                .collect(),
        )
    };
    for (body, from_new) in [(&exact, true), (&narrowed, false)] {
        let (_, legacy, _) = post(
            &client,
            &format!("{}/{}/_search", stack.legacy_es, pair.legacy_index),
            body.as_bytes(),
            false,
        )
        .await;
        let (status, through, _) = post(
            &client,
            &format!("{}/{}/_search", canary.url, pair.legacy_index),
            body.as_bytes(),
            false,
        )
        .await;
        assert_eq!(status, 200);
        let (legacy_docs, _) = sources(&legacy);
        let (served_docs, indices) = sources(&through);
        assert!(!legacy_docs.is_empty());
        assert_eq!(
            served_docs, legacy_docs,
            "the canary's documents are the legacy ones, in the legacy shape"
        );
        let want = if from_new {
            &pair.new_index
        } else {
            &pair.legacy_index
        };
        assert_eq!(indices, BTreeSet::from([want.clone()]), "{body}");
    }
    let summary = canary.stop();
    assert!(summary.ends_with("1 served from new"), "{summary}");
}

#[test]
fn translate_prints_the_new_search_or_refuses_with_the_construct() {
    let run = |args: &[&str], input: &str| {
        let mut child = indexer()
            .args(["translate"])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all_blocking(input.as_bytes());
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, stdout, stderr) = run(&[], r#"{"query": {"match": {"actions.tags.name": "dor"}}}"#);
    assert_eq!(code, 0, "{stderr}");
    let body: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        body,
        json!({"query": {"term": {"tags.keyToValue": "name:dor"}}})
    );
    assert!(stderr.starts_with("class: analysis (narrower"), "{stderr}");
    let (code, stdout, _) = run(
        &["--clause"],
        r#"{"exists": {"field": "actions.tags.k8s:ns"}}"#,
    );
    assert_eq!(
        (code, serde_json::from_str::<Value>(&stdout).unwrap()),
        (0, json!({"prefix": {"tags.keyToValue": "k8s\\:ns:"}}))
    );
    let (code, stdout, stderr) = run(&[], r#"{"query": {"term": {"actions.tags.name": "Dor"}}}"#);
    assert_eq!((code, stdout.as_str()), (1, ""));
    assert!(
        stderr.starts_with("error: cannot translate /query/term/actions.tags.name: `term` `Dor`"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&[], "{not json");
    assert_eq!(code, 2);
    assert!(
        stderr.contains("the legacy search on stdin is not JSON"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_serves_https_with_its_own_certificate() {
    let stack = stack();
    let dir = std::env::temp_dir().join(unique("shadow-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ])
        .output()
        .expect("the test makes its certificate with the openssl command");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let proxy = Shadow::start(
        (&stack.legacy_es, "tags-v1"),
        &stack.new_es,
        "tags-v2",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let https = proxy.url.replace("http://", "https://");
    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let answer = trusting
        .get(format!("{https}/_cluster/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let health: Value = answer.json().await.unwrap();
    assert!(health["status"].is_string(), "{health}");
    // Plain HTTP is not answered on a TLS listener.
    assert!(reqwest::Client::new()
        .get(format!("{}/_cluster/health", proxy.url))
        .send()
        .await
        .map_or(true, |r| !r.status().is_success()));
    proxy.stop();
    let _ = std::fs::remove_dir_all(dir);
}
