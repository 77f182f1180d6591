//! Shared helpers for the integration tests: the real broker and ES stand-ins started by
//! `scripts/stack.sh`, reached over loopback through the same clients the service uses.
//!
//! The oracle here is written independently of the indexer: it parses commands with
//! `serde_json::Value` and builds the expected documents with its own `key:value` escaping.
#![allow(dead_code)]

pub mod dialect;
pub mod fault_proxy;
pub mod kafka_proxy;
pub mod oracle;

// Not every test binary uses the oracle.
#[allow(unused_imports)]
pub use oracle::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use dual_indexer::generate::GeneratedMessage;
use rdkafka::ClientConfig;
use serde_json::{json, Value};

/// Addresses of the running stack.
pub struct Stack {
    pub brokers: String,
    pub legacy_es: String,
    pub new_es: String,
}

/// Reads the stack's addresses from the environment, or fails saying how to start it.
pub fn stack() -> Stack {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: these tests need the local stack. Run `scripts/test.sh`, or start the stack with \
                 `scripts/stack.sh up` and load its addresses with `eval \"$(scripts/stack.sh env)\"`"
            )
        })
    };
    let stack = Stack {
        brokers: var("KAFKA_BROKERS"),
        legacy_es: var("LEGACY_ES_URL"),
        new_es: var("NEW_ES_URL"),
    };
    let port = stack.brokers.rsplit(':').next().unwrap_or_default();
    if std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}")
            .parse()
            .expect("KAFKA_BROKERS is 127.0.0.1:PORT"),
        Duration::from_secs(2),
    )
    .is_err()
    {
        panic!(
            "no broker answers at {}: start the stack with `scripts/stack.sh up`",
            stack.brokers
        );
    }
    stack
}

/// A generated command stream of `count` commands over `ids` documents with 10 tags each, and one
/// poison message every `poison_every` commands (0: none).
pub fn generated(
    count: usize,
    ids: usize,
    seed: u64,
    poison_every: usize,
) -> Vec<GeneratedMessage> {
    dual_indexer::generate::messages(&dual_indexer::generate::GeneratorSpec {
        count,
        ids,
        tags: 10,
        seed,
        poison_every,
    })
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
        % 1_000_000_000;
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn kafka_config(stack: &Stack) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &stack.brokers);
    c
}

/// Creates a topic and produces the generated messages, in order.
pub async fn produce_topic(
    stack: &Stack,
    topic: &str,
    partitions: i32,
    messages: &[GeneratedMessage],
) {
    let config = kafka_config(stack);
    dual_indexer::source::topics::ensure_topic(&config, topic, partitions)
        .await
        .expect("create topic");
    dual_indexer::generate::produce(&config, topic, messages)
        .await
        .expect("produce");
}

pub use dual_indexer::source::topics::Record;

/// Reads every message of `topic`, up to the high watermarks at the time of the call.
pub fn read_topic(stack: &Stack, topic: &str) -> Vec<Record> {
    dual_indexer::source::topics::read_all(&kafka_config(stack), topic, Duration::from_secs(60))
        .expect("read topic")
}

/// Sends an NDJSON `_bulk` body to `index` (refreshing it) and asserts that every item succeeded:
/// for planting documents the indexer would never write.
pub async fn bulk_ndjson(es_url: &str, index: &str, body: &str) {
    let client = dual_indexer::es::client(es_url, Duration::from_secs(60)).unwrap();
    let response = client
        .send(
            elasticsearch::http::Method::Post,
            &format!("/{index}/_bulk?refresh=true"),
            elasticsearch::http::headers::HeaderMap::new(),
            None::<&()>,
            Some(body.as_bytes()),
            None,
        )
        .await
        .unwrap();
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["errors"], json!(false), "{reply}");
}

/// `n` upsert commands for the ids `doc-000000`…, with the generator's tags and fields.
pub fn corpus(n: usize, seed: u64) -> Vec<Value> {
    let spec = dual_indexer::generate::GeneratorSpec {
        count: n * 2,
        ids: n,
        tags: 8,
        seed,
        poison_every: 0,
    };
    let upserts: Vec<Value> = dual_indexer::generate::messages(&spec)
        .into_iter()
        .filter_map(|m| serde_json::from_slice::<Value>(&m.payload).ok())
        .filter(|c| c["type"] == "upsert")
        .take(n)
        .enumerate()
        .map(|(i, mut c)| {
            c["id"] = json!(dual_indexer::generate::doc_id(i));
            c
        })
        .collect();
    assert_eq!(upserts.len(), n, "the generator gave too few upserts");
    upserts
}

/// Writes the commands' documents into a legacy-schema index, the way the legacy indexer would.
pub async fn load_legacy(es_url: &str, index: &str, commands: &[Value]) {
    let client = dual_indexer::es::client(es_url, Duration::from_secs(60)).unwrap();
    dual_indexer::es::ensure_index(
        &client,
        index,
        dual_indexer::transform::Schema::Legacy.template(),
    )
    .await
    .unwrap();
    let sink = dual_indexer::sink::BulkSink::new(
        client.clone(),
        index,
        dual_indexer::sink::RetryPolicy::default(),
        Duration::from_secs(60),
    );
    let payloads: Vec<Vec<u8>> = commands
        .iter()
        .map(|c| serde_json::to_vec(c).unwrap())
        .collect();
    let plan = dual_indexer::envelope::Plan::builtin(
        dual_indexer::envelope::VersionSource::version_field(),
    );
    for (chunk_no, chunk) in payloads.chunks(2_000).enumerate() {
        let mut batch = dual_indexer::sink::Batch::default();
        for (n, payload) in chunk.iter().enumerate() {
            let offset = (chunk_no * 2_000 + n) as i64;
            let write = plan
                .prepare(
                    dual_indexer::transform::Schema::Legacy,
                    &dual_indexer::envelope::Record::new(payload, None, offset),
                )
                .unwrap();
            let ticket = dual_indexer::source::offsets::Ticket {
                partition: 0,
                offset,
                epoch: 0,
            };
            batch.push(
                write,
                dual_indexer::sink::Provenance {
                    ticket,
                    key: None,
                    payload,
                },
            );
        }
        for (_, outcome) in sink.deliver(batch).await.unwrap() {
            assert!(
                matches!(outcome, dual_indexer::sink::ItemOutcome::Applied(_)),
                "{outcome:?}"
            );
        }
    }
}

pub async fn create_new_index(es_url: &str, index: &str) {
    let client = dual_indexer::es::client(es_url, Duration::from_secs(60)).unwrap();
    assert!(dual_indexer::es::ensure_index(
        &client,
        index,
        dual_indexer::transform::Schema::New.template()
    )
    .await
    .unwrap());
}

/// The payloads the generator planted as poison.
pub fn poison_payloads(messages: &[GeneratedMessage]) -> HashSet<Vec<u8>> {
    messages
        .iter()
        .filter(|m| m.poison.is_some())
        .map(|m| m.payload.clone())
        .collect()
}

/// How often each poison message may appear in the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Letters {
    /// Exactly once: no rebalance happened during the run.
    ExactlyOnce,
    /// At least once: a rebalance may repeat a dead letter that was in flight when its partition
    /// was revoked (documented delivery guarantee; the repeats must be identical).
    AtLeastOnce,
}

/// Asserts the dead-letter topic holds the poison of `records` and nothing else, with correct
/// headers, each entry as often as `letters` allows.
pub fn assert_dead_letters(
    stack: &Stack,
    topic: &str,
    dlq: &str,
    records: &[Record],
    messages: &[GeneratedMessage],
    letters_per_poison: Letters,
) {
    let classes: HashMap<&[u8], &str> = messages
        .iter()
        .filter_map(|m| m.poison.map(|p| (m.payload.as_slice(), p.expected_class())))
        .collect();
    let planted: BTreeMap<(i32, i64), &Record> = records
        .iter()
        .filter(|r| classes.contains_key(r.payload.as_slice()))
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    let letters = read_topic(stack, dlq);
    let mut seen = BTreeMap::new();
    for letter in &letters {
        let h = &letter.headers;
        let source = (
            h["dual-indexer.source.partition"].parse::<i32>().unwrap(),
            h["dual-indexer.source.offset"].parse::<i64>().unwrap(),
        );
        assert_eq!(h["dual-indexer.source.topic"], topic);
        let original = planted
            .get(&source)
            .unwrap_or_else(|| panic!("dead letter for {source:?} was not planted: {h:?}"));
        assert_eq!(
            letter.payload, original.payload,
            "payload kept byte for byte"
        );
        assert_eq!(letter.key, original.key, "key kept byte for byte");
        assert_eq!(
            h["dual-indexer.error.class"],
            classes[original.payload.as_slice()],
            "class of {source:?}: {h:?}"
        );
        assert!(!h["dual-indexer.error.reason"].is_empty());
        if h["dual-indexer.error.class"] == "mapping" {
            assert_eq!(
                h["dual-indexer.error.es_type"], "strict_dynamic_mapping_exception",
                "{h:?}"
            );
        }
        let first = seen.insert(source, ()).is_none();
        assert!(
            first || letters_per_poison == Letters::AtLeastOnce,
            "{source:?} dead-lettered twice"
        );
    }
    let missing: Vec<_> = planted.keys().filter(|k| !seen.contains_key(*k)).collect();
    assert!(missing.is_empty(), "poison not dead-lettered: {missing:?}");
    if letters_per_poison == Letters::ExactlyOnce {
        assert_eq!(letters.len(), planted.len());
    }
}

/// The `dual-indexer` binary under test.
///
/// The caller's `DUAL_INDEXER_…` settings are removed, so a variable left in the shell (a status
/// address, a schema) cannot change what a test runs; only the test run's mark stays, by which
/// `scripts/test.sh` finds leftover processes.
pub fn indexer() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dual-indexer"));
    c.env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (name, _) in std::env::vars_os() {
        let is_setting = name
            .to_str()
            .is_some_and(|n| n.starts_with("DUAL_INDEXER_") && n != "DUAL_INDEXER_TEST_RUN");
        if is_setting {
            c.env_remove(name);
        }
    }
    c
}

/// The consumer session of every test indexer. A killed member stays in its group this long.
///
/// The test broker (tansu 0.6.0) can leave a group stuck for good once a member's session times
/// out: it may keep naming the evicted member as leader, or form the group with an empty
/// assignment, and a rejoining member then never gets partitions again. Real Kafka evicts and
/// rebalances. Under CI load tansu has left a member's heartbeats unanswered for over 10 s (it
/// answers a connection's requests one at a time, so heartbeats wait behind slow commits). The
/// tests avoid such spurious timeouts with librdkafka's usual order of session (30 s; its default
/// is 45 s), heartbeats once a second, and commits once a second rather than five times.
pub const SESSION: Duration = Duration::from_secs(30);

/// Waits until a SIGKILLed member's session has expired, so the next member does not join a
/// group that still lists it (see [`SESSION`]).
pub fn await_session_expiry() {
    std::thread::sleep(SESSION + Duration::from_secs(1));
}

/// Common `run` arguments against the stack's new cluster.
pub fn run_args(stack: &Stack, topic: &str, group: &str, index: &str) -> Vec<String> {
    run_args_to(stack, topic, group, index, &stack.new_es)
}

/// [`run_args`] writing to `es_url` instead of the stack's new cluster (the legacy cluster, a
/// fault proxy, a private or silent server).
pub fn run_args_to(
    stack: &Stack,
    topic: &str,
    group: &str,
    index: &str,
    es_url: &str,
) -> Vec<String> {
    [
        "run",
        "--brokers",
        &stack.brokers,
        "--topic",
        topic,
        "--group",
        group,
        "--es-url",
        es_url,
        "--index",
        index,
        "--create-index",
        "--commit-interval-ms",
        "1000",
        "--linger-ms",
        "20",
        "--progress-secs",
        "5",
        "--kafka",
        &format!("session.timeout.ms={}", SESSION.as_millis()),
        "--kafka",
        "heartbeat.interval.ms=1000",
        "--kafka",
        "max.poll.interval.ms=30000",
        "--interval-secs",
        "1",
        "--window-secs",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Waits for a child with a timeout; kills it and fails the test if it overruns.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    wait_a_while(child, timeout).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the indexer did not finish within {timeout:?}");
    })
}

/// Waits up to `timeout` for the child to exit; `None` if it is still running.
pub fn wait_a_while(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads a child's output on a thread of its own, so the child never blocks on a full pipe.
pub fn read_in_background(
    mut pipe: impl std::io::Read + Send + 'static,
) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends SIGTERM to a child.
pub fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The committed offsets of `group` on `topic`, and the topic's high watermarks.
///
/// Under the load of a whole test run the test broker has answered a metadata request after more
/// than the reader's 10 s; such a slow answer is asked again, twice, before the test fails.
pub fn committed_and_high(stack: &Stack, group: &str, topic: &str) -> Vec<(i32, Option<i64>, i64)> {
    let config = kafka_config(stack);
    let mut attempt = 0;
    let positions = loop {
        attempt += 1;
        match dual_indexer::source::group::positions(&config, group, topic) {
            Ok(positions) => break positions,
            Err(e) if attempt < 3 => {
                eprintln!("reading the positions of {group} on {topic}: {e}; asking again")
            }
            Err(e) => panic!("reading the positions of {group} on {topic}, three times: {e}"),
        }
    };
    positions
        .into_iter()
        .map(|p| (p.partition, p.committed, p.high))
        .collect()
}

/// Number of messages `group` has committed past, over all partitions.
pub fn committed_total(stack: &Stack, group: &str, topic: &str) -> i64 {
    committed_and_high(stack, group, topic)
        .iter()
        .map(|(_, c, _)| c.unwrap_or(0))
        .sum()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path` from a loopback HTTP server (the status endpoint, the ES stand-in): (status code, JSON body), or None if nothing listens yet.
pub fn get(port: u16, path: &str) -> Option<(u16, Value)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).ok()?;
    let code = reply.split_whitespace().nth(1)?.parse().ok()?;
    let body = reply.split("\r\n\r\n").nth(1)?;
    Some((code, serde_json::from_str(body).ok()?))
}

/// Polls `check` every 200 ms until it answers, failing the test after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child process that is killed when the guard is dropped, so that a failing test leaves no
/// indexer running behind it.
pub struct Guarded(pub Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a command as a [`Guarded`] child. Every process a test starts goes through this: one
/// left running would keep the test binary's output pipe open and hang the whole test run.
pub trait SpawnGuarded {
    fn guarded(&mut self) -> Guarded;
}

impl SpawnGuarded for Command {
    fn guarded(&mut self) -> Guarded {
        Guarded(self.spawn().expect("the test can start its child process"))
    }
}

impl std::ops::Deref for Guarded {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Guarded {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Waits until a backfill's checkpoint shows two finished slices and one partly copied, so that a
/// kill lands mid-way.
pub fn await_partial_backfill(checkpoint: &std::path::Path) {
    wait_for(
        "two finished slices and one half-copied",
        Duration::from_secs(120),
        || {
            let c: Value = serde_json::from_slice(&std::fs::read(checkpoint).ok()?).ok()?;
            let slices = c["slices"].as_array()?;
            let done = slices.iter().filter(|s| s["done"] == true).count();
            let partial = slices
                .iter()
                .filter(|s| s["done"] == false && s["read"].as_u64() > Some(0))
                .count();
            (done >= 2 && partial >= 1).then_some(())
        },
    );
}

/// The indices both indexers filled from one topic.
pub struct SideBySide {
    pub legacy_index: String,
    pub new_index: String,
    /// The command topic both replayed.
    pub topic: String,
}

/// Replays `messages` into the legacy cluster (legacy schema, legacy group) and the new cluster
/// (new schema, own group) at the same time, each until caught up.
pub async fn replay_both(stack: &Stack, messages: &[GeneratedMessage]) -> SideBySide {
    let topic = unique("side");
    produce_topic(stack, &topic, 3, messages).await;
    let legacy_index = unique("tags-v1");
    let new_index = unique("tags-v2");
    let legacy_group = unique("legacy-indexer");
    let legacy_args = run_args_to(
        stack,
        &topic,
        &legacy_group,
        &legacy_index,
        &stack.legacy_es,
    );
    let mut legacy = indexer()
        .args(&legacy_args)
        .args(["--schema", "legacy", "--until-caught-up"])
        .guarded();
    let mut new = indexer()
        .args(run_args(stack, &topic, &unique("indexer"), &new_index))
        .args(["--legacy-group", &legacy_group, "--until-caught-up"])
        .guarded();
    assert!(wait_with_timeout(&mut legacy, Duration::from_secs(240)).success());
    assert!(wait_with_timeout(&mut new, Duration::from_secs(240)).success());
    SideBySide {
        topic,
        legacy_index,
        new_index,
    }
}
