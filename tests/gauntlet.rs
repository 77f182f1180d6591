//! The reliability gauntlet: the replay under injected faults ends equal to the oracle, with the
//! dead-letter topic holding exactly the planted poison. Faults come from the fault-injecting
//! proxy (`support/fault_proxy.rs`) between the indexer and the ES stand-in, from signals, and
//! from an unreachable dead-letter producer.
//!
//! Each scenario prints one result line (`cargo test --test gauntlet -- --nocapture`). CI runs the
//! short version; `DUAL_INDEXER_GAUNTLET=full` runs the parameters docs/reliability.md reports.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use dual_indexer::generate::GeneratedMessage;
use support::fault_proxy::{FaultProxy, Plan};
use support::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(300);

fn full() -> bool {
    std::env::var("DUAL_INDEXER_GAUNTLET").is_ok_and(|v| v == "full")
}

fn messages(count: usize, ids: usize, seed: u64) -> Vec<GeneratedMessage> {
    generated(count, ids, seed, 250)
}

/// `run` arguments through `es_url`, with short retries so faults cost seconds, not minutes.
fn args_via(stack: &Stack, topic: &str, group: &str, index: &str, es_url: &str) -> Vec<String> {
    let mut args = run_args_to(stack, topic, group, index, es_url);
    args.extend(
        [
            "--retry-base-ms",
            "20",
            "--retry-max-ms",
            "1000",
            "--request-timeout-secs",
            "3",
            "--batch-max-docs",
            "250",
        ]
        .map(String::from),
    );
    args
}

/// Checks that every non-poison command below the group's committed offsets was answered as
/// applied (or already applied) by the proxy, and returns the committed total.
fn assert_commits_acknowledged(
    stack: &Stack,
    group: &str,
    topic: &str,
    records: &[dual_indexer::source::topics::Record],
    poison: &std::collections::HashSet<Vec<u8>>,
    proxy: &FaultProxy,
) -> i64 {
    let committed: BTreeMap<i32, i64> = committed_and_high(stack, group, topic)
        .into_iter()
        .map(|(p, c, _)| (p, c.unwrap_or(0)))
        .collect();
    for r in records {
        if r.offset >= committed[&r.partition] || poison.contains(&r.payload) {
            continue;
        }
        let id = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default());
        // A write waiting for its retry is dropped once a newer write of the same document was
        // applied (it would only be refused as older, or, past the tombstone's lifetime, bring a
        // deleted document back): then the newer write's acknowledgement stands for it.
        let overtaken = proxy
            .acknowledged_versions(&id)
            .0
            .iter()
            .any(|v| *v > r.offset as u64);
        assert!(
            proxy.acknowledged(&id, r.offset as u64) || overtaken,
            "partition {} is committed to {}, past offset {} (`{id}`), whose write Elasticsearch never acknowledged (acknowledged versions of `{id}`, and writes acknowledged in all: {:?})",
            r.partition,
            committed[&r.partition],
            r.offset,
            proxy.acknowledged_versions(&id)
        );
    }
    committed.values().sum()
}

fn run_until_caught_up(args: &[String]) {
    let mut child = indexer().args(args).args(["--until-caught-up"]).guarded();
    let status = wait_with_timeout(&mut child, RUN_TIMEOUT);
    assert!(status.success(), "indexer exited with {status}");
}

/// The result line's numbers: documents in the index, entries in the dead-letter topic, and
/// poison messages planted in the command topic (repeats counted).
struct EndState {
    docs: usize,
    letters: usize,
    planted: usize,
}

impl std::fmt::Display for EndState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "0 lost, 0 divergent ({} documents equal the oracle), {} dead letters in the topic for {} poison messages planted",
            self.docs, self.letters, self.planted
        )
    }
}

/// Checks the end state against the oracle and the dead-letter topic against the planted poison.
async fn assert_no_loss(
    stack: &Stack,
    topic: &str,
    index: &str,
    messages: &[GeneratedMessage],
    letters: Letters,
) -> EndState {
    let records = read_topic(stack, topic);
    let poison = poison_payloads(messages);
    let expected = oracle(&records, &poison, Versions::Offset);
    assert_index_equals(&stack.new_es, index, &expected).await;
    let dlq = format!("{topic}.dlq");
    assert_dead_letters(stack, topic, &dlq, &records, messages, letters);
    let planted = records
        .iter()
        .filter(|r| poison.contains(&r.payload))
        .count();
    assert!(planted > 0, "the scenario planted poison");
    EndState {
        docs: expected.len(),
        letters: read_topic(stack, &dlq).len(),
        planted,
    }
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn item_429s_and_request_503s_lose_nothing() {
    let stack = stack();
    let count = if full() { 20_000 } else { 6_000 };
    let (topic, index, group) = (unique("g-429"), unique("tags-v2-429"), unique("indexer"));
    let messages = messages(count, count / 4, 21);
    produce_topic(&stack, &topic, 3, &messages).await;
    // 2 % of requests answered 503: every 50th, so that a short run is sure to meet some.
    let plan = Plan {
        seed: 21,
        item_429: 0.10,
        request_503_every: 50,
        ..Plan::default()
    };
    let proxy = FaultProxy::start(&stack.new_es, plan).await;
    let records = read_topic(&stack, &topic);
    let poison = poison_payloads(&messages);
    let mut child = indexer()
        .args(args_via(&stack, &topic, &group, &index, &proxy.url))
        .arg("--until-caught-up")
        .guarded();
    // Every commit, sampled while the replay runs and once at the end, stands on writes the proxy
    // saw acknowledged: none was dropped after a 429, even where a later write to the same
    // document would hide the loss in the end state.
    let started = Instant::now();
    let mut samples = Vec::new();
    while child.0.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < RUN_TIMEOUT, "the replay did not finish");
        samples.push(assert_commits_acknowledged(
            &stack, &group, &topic, &records, &poison, &proxy,
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(wait_with_timeout(&mut child, Duration::from_secs(5)).success());
    let committed = assert_commits_acknowledged(&stack, &group, &topic, &records, &poison, &proxy);
    assert_eq!(committed, count as i64);
    assert!(
        samples.iter().any(|&c| c > 0 && c < count as i64),
        "commits were checked mid-replay: {samples:?}"
    );
    let end = assert_no_loss(&stack, &topic, &index, &messages, Letters::ExactlyOnce).await;
    let counts = proxy.counts();
    assert!(
        counts.items_429.load(Ordering::Relaxed) > 0,
        "{}",
        counts.describe()
    );
    assert!(
        counts.requests_503.load(Ordering::Relaxed) > 0,
        "{}",
        counts.describe()
    );
    println!(
        "RESULT 429/503: {count} commands; {}; {end}",
        counts.describe()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blackholed_cluster_pauses_the_replay_and_it_resumes_without_loss() {
    let stack = stack();
    let hole = Duration::from_secs(if full() { 30 } else { 15 });
    let (topic, index, group) = (unique("g-hole"), unique("tags-v2-hole"), unique("indexer"));
    let messages = messages(12_000, 3_000, 22);
    produce_topic(&stack, &topic, 3, &messages).await;
    let proxy = FaultProxy::start(
        &stack.new_es,
        // A second per request paces the replay at about 1,000 commands a second (4 requests of
        // 250 in flight), so the hole, opened once 1,000 are committed, lands with most of the
        // topic still unread: at 30 ms the replay could end before the test opened it.
        Plan {
            seed: 22,
            latency: Duration::from_millis(1000),
            ..Plan::default()
        },
    )
    .await;
    let records = read_topic(&stack, &topic);
    let poison = poison_payloads(&messages);
    let port = free_port();
    let args = args_via(&stack, &topic, &group, &index, &proxy.url);
    let mut child = indexer()
        .args(&args)
        .args(["--status-addr", &format!("127.0.0.1:{port}")])
        .guarded();
    wait_for("the first commits", Duration::from_secs(120), || {
        (committed_total(&stack, &group, &topic) >= 1_000).then_some(())
    });
    let before = rss_mb(child.0.id());
    proxy.blackhole_for(hole);
    let started = Instant::now();
    let mut peak = before;
    // Through the hole, every commit must stand on writes the proxy answered before it: that is
    // what "nothing is committed past unapplied work" means, whatever the timing of the commits.
    // And consumption stops: the budget of unfinished messages fills, the loop holds off reading
    // (keeping librdkafka's prefetch), and once the hold has lasted 5 s it pauses the partitions.
    let mut commits_in_hole = Vec::new();
    let (mut held_first, mut paused) = (false, false);
    while started.elapsed() < hole - Duration::from_secs(1) {
        peak = peak.max(rss_mb(child.0.id()));
        commits_in_hole.push(assert_commits_acknowledged(
            &stack, &group, &topic, &records, &poison, &proxy,
        ));
        if let Some((_, s)) = get(port, "/status") {
            held_first |= !paused && s["replay"]["holding"] == true;
            paused |= s["replay"]["paused"] == true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let committed_at_end_of_hole = *commits_in_hole.last().unwrap();
    assert!(held_first, "the loop held off reading before it paused");
    assert!(paused, "the consumer paused in the hole");
    assert!(
        committed_at_end_of_hole < 12_000,
        "the hole opened mid-replay"
    );
    assert!(proxy.counts().held.load(Ordering::Relaxed) > 0);
    wait_for("the replay to catch up", RUN_TIMEOUT, || {
        (committed_total(&stack, &group, &topic) == 12_000).then_some(())
    });
    terminate(&child.0);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(60)).success());
    let end = assert_no_loss(&stack, &topic, &index, &messages, Letters::ExactlyOnce).await;
    assert!(
        peak < before + 64.0,
        "memory stays flat while paused: {before:.1} MB before, {peak:.1} MB peak"
    );
    println!(
        "RESULT blackhole: 12000 commands, Elasticsearch unanswered for {} s mid-replay; the consumer paused; {} commit samples in the hole, each standing on acknowledged writes only (last {committed_at_end_of_hole}); RSS {before:.1} MB before, {peak:.1} MB peak in the hole; {end}",
        hole.as_secs(),
        commits_in_hole.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_slower_than_the_budget_drains_holds_the_replay_without_pausing_it() {
    let stack = stack();
    let (topic, index, group) = (unique("g-slow"), unique("tags-v2-slow"), unique("indexer"));
    let count = 1_500;
    let messages = messages(count, 500, 27);
    produce_topic(&stack, &topic, 3, &messages).await;
    // One request of 250 in flight, each answered after 3 s: the budget (750 messages) fills at
    // once, a batch finishes every 3 s, and the budget is back to half (375) only after two of
    // them, 6 s into a hold that may last 5 s. The hold runs out with one batch freed: the loop
    // must read on, not pause (which would have librdkafka discard its prefetch).
    let proxy = FaultProxy::start(
        &stack.new_es,
        Plan {
            seed: 27,
            latency: Duration::from_millis(3000),
            ..Plan::default()
        },
    )
    .await;
    let port = free_port();
    // `args_via`'s 3 s request timeout would time every request out.
    let mut args = run_args_to(&stack, &topic, &group, &index, &proxy.url);
    args.extend(
        [
            "--request-timeout-secs",
            "10",
            "--batch-max-docs",
            "250",
            "--max-in-flight",
            "1",
            "--status-addr",
            &format!("127.0.0.1:{port}"),
        ]
        .map(String::from),
    );
    let started = Instant::now();
    let mut child = indexer().args(&args).guarded();
    let (mut held, mut status) = (false, serde_json::Value::Null);
    wait_for("the replay to catch up", RUN_TIMEOUT, || {
        if let Some((_, s)) = get(port, "/status") {
            held |= s["replay"]["holding"] == true;
            status = s;
        }
        (committed_total(&stack, &group, &topic) == count as i64).then_some(())
    });
    let took = started.elapsed();
    // The status board is updated once a commit tick: read it after the last one.
    std::thread::sleep(Duration::from_millis(1500));
    if let Some((_, s)) = get(port, "/status") {
        status = s;
    }
    terminate(&child.0);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(60)).success());
    assert!(held, "the budget filled, so the loop held: {status}");
    assert!(
        took >= Duration::from_secs(15),
        "the proxy paced the replay (6 requests of 3 s): {took:?}"
    );
    assert_eq!(
        status["replay"]["pauses"], 0,
        "a slow cluster that frees budget during every hold never pauses the partitions: {status}"
    );
    let end = assert_no_loss(&stack, &topic, &index, &messages, Letters::ExactlyOnce).await;
    println!(
        "RESULT slow cluster: {count} commands, every bulk request answered after 3 s, one in flight; the loop held and never paused; took {:.1} s; {end}",
        took.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_sigkills_at_random_points_lose_nothing() {
    let stack = stack();
    let kills = if full() { 20 } else { 4 };
    let (topic, index, group) = (unique("g-kill"), unique("tags-v2-kill"), unique("indexer"));
    let count = if full() { 40_000 } else { 12_000 };
    let messages = messages(count, count / 4, 23);
    produce_topic(&stack, &topic, 3, &messages).await;
    // A second per request paces the replay at about 1,000 commands a second, so that every kill
    // (at most 1.5 s after a restart's first commit) lands with part of the topic still unread.
    let proxy = FaultProxy::start(
        &stack.new_es,
        Plan {
            seed: 23,
            latency: Duration::from_millis(1000),
            ..Plan::default()
        },
    )
    .await;
    let args = args_via(&stack, &topic, &group, &index, &proxy.url);
    // A seeded sequence of kill delays, after the group has joined.
    let mut seed = 23u64;
    let mut committed = Vec::new();
    for _ in 0..kills {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_millis(300 + (seed >> 33) % 1_200);
        let mut child = indexer().args(&args).guarded();
        let before = committed_total(&stack, &group, &topic);
        wait_for(
            "the restarted indexer to commit",
            Duration::from_secs(120),
            || {
                (committed_total(&stack, &group, &topic) > before
                    || committed_total(&stack, &group, &topic) as usize == count)
                    .then_some(())
            },
        );
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        let after_kill = committed_total(&stack, &group, &topic);
        assert!(
            after_kill < count as i64,
            "kill {} came after the replay ended: {after_kill} of {count} committed",
            committed.len() + 1
        );
        committed.push(after_kill);
        await_session_expiry();
    }
    assert!(
        committed.windows(2).all(|w| w[0] <= w[1]),
        "commits never go backwards: {committed:?}"
    );
    run_until_caught_up(&args);
    let end = assert_no_loss(&stack, &topic, &index, &messages, Letters::AtLeastOnce).await;
    println!(
        "RESULT kills: {count} commands, {kills} SIGKILLs at seeded random points (commits after each: {committed:?}); {end}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_dead_letter_topic_halts_its_partitions_loudly_and_commits_nothing_past_them(
) {
    let stack = stack();
    let (topic, index, group) = (unique("g-dlq"), unique("tags-v2-dlq"), unique("indexer"));
    let messages = messages(3_000, 800, 24);
    produce_topic(&stack, &topic, 3, &messages).await;
    let args = args_via(&stack, &topic, &group, &index, &stack.new_es);
    let mut broken = args.clone();
    broken.extend(
        [
            "--dlq-kafka",
            "bootstrap.servers=127.0.0.1:1",
            "--dlq-kafka",
            "message.timeout.ms=1500",
            "--drain-timeout-secs",
            "3",
        ]
        .map(String::from),
    );
    let mut child = indexer().args(&broken).stderr(Stdio::piped()).guarded();
    // Read as it comes: a full pipe would block the indexer's logging, and with it its exit.
    let stderr = read_in_background(child.0.stderr.take().unwrap());
    let records = read_topic(&stack, &topic);
    let poison = poison_payloads(&messages);
    let mut first_poison: BTreeMap<i32, i64> = BTreeMap::new();
    for r in records.iter().filter(|r| poison.contains(&r.payload)) {
        let first = first_poison.entry(r.partition).or_insert(r.offset);
        *first = (*first).min(r.offset);
    }
    let committed = || -> BTreeMap<i32, i64> {
        committed_and_high(&stack, &group, &topic)
            .into_iter()
            .map(|(p, c, _)| (p, c.unwrap_or(0)))
            .collect()
    };
    // Every partition commits everything before its first poison, whose dead letter cannot be
    // written...
    wait_for(
        "every partition to commit up to its first poison",
        Duration::from_secs(60),
        || (committed() == first_poison).then_some(()),
    );
    // ...and nothing past it, however long the outage lasts.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        committed(),
        first_poison,
        "a partition committed past its first undeliverable dead letter"
    );
    terminate(&child.0);
    let exited = wait_a_while(&mut child, Duration::from_secs(60));
    let _ = child.kill();
    let stderr = stderr.join().unwrap();
    assert!(
        exited.is_some(),
        "SIGTERM did not end the indexer within 60 s; its log ends with:\n{}",
        tail(&stderr, 40)
    );
    assert!(
        stderr.contains("cannot write to the dead-letter topic"),
        "the halt is loud"
    );
    let halted_at = committed_total(&stack, &group, &topic);

    // With the dead-letter topic back, the same group finishes and nothing is lost.
    run_until_caught_up(&args);
    let end = assert_no_loss(&stack, &topic, &index, &messages, Letters::AtLeastOnce).await;
    println!(
        "RESULT dead-letter topic unreachable: 3000 commands; every partition stopped committing at its first poison (commits {halted_at} of 3000, first poison per partition {first_poison:?}), logged as an error; after repair {end}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_drains_commits_and_exits_zero() {
    let stack = stack();
    let (topic, index, group) = (unique("g-term"), unique("tags-v2-term"), unique("indexer"));
    let messages = messages(10_000, 2_500, 25);
    produce_topic(&stack, &topic, 3, &messages).await;
    // Latency keeps several bulk requests in flight when the signal comes.
    let proxy = FaultProxy::start(
        &stack.new_es,
        Plan {
            seed: 25,
            latency: Duration::from_millis(300),
            ..Plan::default()
        },
    )
    .await;
    let args = args_via(&stack, &topic, &group, &index, &proxy.url);
    let mut child = indexer().args(&args).guarded();
    wait_for("commits under load", Duration::from_secs(120), || {
        (committed_total(&stack, &group, &topic) >= 1_500).then_some(())
    });
    let signalled = Instant::now();
    terminate(&child.0);
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    let drain = signalled.elapsed();
    assert!(status.success(), "a drained shutdown exits 0: {status}");
    let records = read_topic(&stack, &topic);
    let at_exit = assert_commits_acknowledged(
        &stack,
        &group,
        &topic,
        &records,
        &poison_payloads(&messages),
        &proxy,
    );
    assert!(at_exit < 10_000, "stopped mid-replay");
    run_until_caught_up(&args);
    let end = assert_no_loss(&stack, &topic, &index, &messages, Letters::ExactlyOnce).await;
    println!(
        "RESULT SIGTERM under load: 10000 commands, 300 ms per bulk request; exit 0 after {:.1} s of draining with {at_exit} committed; the restart finished with {end}",
        drain.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_killed_and_restarted_mid_replay_loses_nothing() {
    let stack = stack();
    let tansu = std::env::var("TANSU_BIN").expect(
        "TANSU_BIN is exported by `scripts/stack.sh env` (restart a stack that predates it)",
    );
    let dir = std::env::temp_dir().join(unique("tansu-restart"));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let listener = format!("tcp://127.0.0.1:{port}");
    let start_broker = || {
        let child = std::process::Command::new(&tansu)
            .current_dir(&dir)
            .args([
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &listener,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .guarded();
        wait_for("the private broker", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        child
    };
    let mut broker = start_broker();
    let private = Stack {
        brokers: format!("127.0.0.1:{port}"),
        legacy_es: stack.legacy_es.clone(),
        new_es: stack.new_es.clone(),
    };
    let (topic, index, group) = (
        unique("g-broker"),
        unique("tags-v2-broker"),
        unique("indexer"),
    );
    let messages = messages(10_000, 2_500, 26);
    produce_topic(&private, &topic, 3, &messages).await;
    // Latency slows the replay so the broker dies with most of it still ahead.
    let proxy = FaultProxy::start(
        &stack.new_es,
        Plan {
            seed: 26,
            latency: Duration::from_millis(150),
            ..Plan::default()
        },
    )
    .await;
    let args = args_via(&private, &topic, &group, &index, &proxy.url);
    let mut child = indexer().args(&args).guarded();
    wait_for(
        "commits before the broker dies",
        Duration::from_secs(120),
        || (committed_total(&private, &group, &topic) >= 1_500).then_some(()),
    );
    // No commit can land while the broker is down, so this is what was committed when it died.
    let committed_when_killed = committed_total(&private, &group, &topic);
    broker.0.kill().unwrap();
    broker.0.wait().unwrap();
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the indexer outlives the broker"
    );
    broker = start_broker();
    let restarted_after = killed_at.elapsed();
    wait_for(
        "the replay to finish after the restart",
        RUN_TIMEOUT,
        || (committed_total(&private, &group, &topic) == 10_000).then_some(()),
    );
    assert!(
        committed_when_killed < 10_000,
        "the broker died mid-replay: {committed_when_killed} of 10000 were committed"
    );
    terminate(&child.0);
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    assert!(
        status.success(),
        "the indexer drains and exits 0 after the restart: {status}"
    );
    let end = assert_no_loss(&private, &topic, &index, &messages, Letters::AtLeastOnce).await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "RESULT broker restart: 10000 commands; tansu SIGKILLed mid-replay and restarted on the same sqlite store {:.1} s later; the indexer reconnected by itself; {end}",
        restarted_after.as_secs_f64()
    );
}

/// Collects a child's log lines as they come, so a test can wait for one.
fn watch_log(
    pipe: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<String>> {
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

/// Whether a member's log shows it was assigned at least one partition.
fn took_partitions(log: &str) -> bool {
    log.lines().any(|line| {
        // Log lines may carry colour codes: drop every escape sequence up to its `m`.
        let mut plain = String::new();
        let mut in_escape = false;
        for c in line.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (false, c) => plain.push(c),
                (true, _) => {}
            }
        }
        plain.contains("partitions assigned") && !plain.contains("partitions=[]")
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rebalance_storm_loses_nothing() {
    let stack = stack();
    let cycles = if full() { 12 } else { 4 };
    let (topic, index, group) = (
        unique("g-storm"),
        unique("tags-v2-storm"),
        unique("indexer"),
    );
    // Long enough that every visit, each waiting to be assigned partitions, ends mid-replay.
    let count = cycles * 6_000;
    let messages = messages(count, count / 4, 27);
    produce_topic(&stack, &topic, 3, &messages).await;
    // Paced so that the replay outlasts the storm: 100-document batches, each answered after
    // 700 ms, make about 500 commands/s at most, and every visit lands mid-replay.
    let proxy = FaultProxy::start(
        &stack.new_es,
        Plan {
            seed: 27,
            latency: Duration::from_millis(700),
            ..Plan::default()
        },
    )
    .await;
    let mut args = args_via(&stack, &topic, &group, &index, &proxy.url);
    let batch = args.iter().position(|a| a == "--batch-max-docs").unwrap() + 1;
    args[batch] = "100".into();
    let mut steady = indexer().args(&args).guarded();
    let mut committed = Vec::new();
    for _ in 0..cycles {
        // A second member joins, takes partitions, and leaves a few seconds later.
        let mut visitor = indexer().args(&args).stderr(Stdio::piped()).guarded();
        let log = watch_log(visitor.0.stderr.take().unwrap());
        let joined = Instant::now();
        while !took_partitions(&log.lock().unwrap()) {
            // On a timeout, the visitor's own log says what it was waiting for.
            assert!(
                joined.elapsed() < Duration::from_secs(60),
                "the visitor was not assigned partitions within 60 s; its log:\n{}",
                log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(2));
        terminate(&visitor.0);
        let status = wait_with_timeout(&mut visitor, Duration::from_secs(60));
        assert!(
            status.success(),
            "a leaving member drains and exits 0, got {status}"
        );
        committed.push(committed_total(&stack, &group, &topic));
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        committed.iter().all(|&c| c < count as i64),
        "every visit came during the replay, not after it: {committed:?}"
    );
    wait_for("the replay to finish after the storm", RUN_TIMEOUT, || {
        (committed_total(&stack, &group, &topic) == count as i64).then_some(())
    });
    terminate(&steady.0);
    assert!(wait_with_timeout(&mut steady, Duration::from_secs(60)).success());
    assert!(
        committed.windows(2).all(|w| w[0] <= w[1]),
        "commits never go backwards: {committed:?}"
    );
    let end = assert_no_loss(&stack, &topic, &index, &messages, Letters::AtLeastOnce).await;
    println!(
        "RESULT rebalance storm: {count} commands, {cycles} members each joining beside a steady one, assigned partitions (checked) and leaving 2 s later, every visit mid-replay (checked; commits after each: {committed:?}); {end}"
    );
}
