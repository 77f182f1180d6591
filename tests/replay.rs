//! `dual-indexer run` against the real broker and ES stand-in: the end state always equals an
//! oracle computed independently from the commands, however the replay is interrupted.

mod support;

use std::time::Duration;

use dual_indexer::generate::{self, GeneratorSpec};
use support::*;

const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn spec(count: usize, ids: usize, seed: u64) -> GeneratorSpec {
    GeneratorSpec {
        count,
        ids,
        tags: 10,
        seed,
        poison_every: 500,
    }
}

/// The number before " consumed" in a run summary.
fn consumed(summary: &str) -> u64 {
    let before = summary.split(" consumed").next().unwrap_or_default();
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {summary:?}"))
}

fn stdout_of(child: &mut std::process::Child) -> String {
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    out
}

/// Runs the indexer until it reports caught up, and returns its stdout summary.
fn run_until_caught_up(args: &[String]) -> String {
    let mut child = indexer().args(args).args(["--until-caught-up"]).guarded();
    let status = wait_with_timeout(&mut child, RUN_TIMEOUT);
    let out = stdout_of(&mut child);
    assert!(status.success(), "indexer exited with {status}: {out}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_with_versions_out_of_order_matches_the_oracle_and_dead_letters_exactly_the_poison()
{
    let stack = stack();
    let (topic, index, group) = (
        unique("replay"),
        unique("tags-v2-replay"),
        unique("indexer"),
    );
    let messages = generate::messages(&spec(20_000, 5_000, 1));
    produce_topic(&stack, &topic, 3, &messages).await;

    let mut args = run_args(&stack, &topic, &group, &index);
    args.extend(["--version-source".into(), "version".into()]);
    let summary = run_until_caught_up(&args);
    assert!(summary.contains("20000 consumed"), "{summary}");

    let records = read_topic(&stack, &topic);
    assert_eq!(records.len(), 20_000);
    let expected = oracle(&records, &poison_payloads(&messages), Versions::Field);
    assert_index_equals(&stack.new_es, &index, &expected).await;
    assert_dead_letters(
        &stack,
        &topic,
        &format!("{topic}.dlq"),
        &records,
        &messages,
        Letters::ExactlyOnce,
    );
    for (partition, committed, high) in committed_and_high(&stack, &group, &topic) {
        assert_eq!(
            committed,
            Some(high),
            "partition {partition} fully committed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn replaying_again_under_a_fresh_group_leaves_the_index_byte_for_byte_the_same() {
    let stack = stack();
    let (topic, index) = (unique("idempotent"), unique("tags-v2-idem"));
    let messages = generate::messages(&spec(6_000, 1_500, 2));
    produce_topic(&stack, &topic, 3, &messages).await;
    // The second replay is a pure no-op only while the first one's delete tombstones live: past
    // index.gc_deletes (60 s by default) it re-creates a deleted document until it re-applies the
    // delete. Under CI load the runs can outlast a minute, so the tombstones are kept for an hour.
    let client = dual_indexer::es::client(&stack.new_es, Duration::from_secs(60)).unwrap();
    dual_indexer::es::ensure_index(&client, &index, dual_indexer::es::NEW_INDEX_TEMPLATE)
        .await
        .unwrap();
    dual_indexer::cutover::index::put_settings(
        &client,
        &index,
        &serde_json::json!({"gc_deletes": "1h"}),
    )
    .await
    .unwrap();

    run_until_caught_up(&run_args(&stack, &topic, &unique("first"), &index));
    let before = dump_index(&stack.new_es, &index).await;
    let records = read_topic(&stack, &topic);
    let expected = oracle(&records, &poison_payloads(&messages), Versions::Offset);
    assert_index_equals(&stack.new_es, &index, &expected).await;

    let summary = run_until_caught_up(&run_args(&stack, &topic, &unique("second"), &index));
    assert!(
        summary.contains(" 0 indexed, 0 deleted"),
        "a replay changes nothing: {summary}"
    );
    let after = dump_index(&stack.new_es, &index).await;
    assert_eq!(before.len(), after.len());
    assert!(
        before == after,
        "sources and versions are unchanged by the second replay"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_replay_then_restart_ends_at_the_oracle() {
    let stack = stack();
    let (topic, index, group) = (unique("killed"), unique("tags-v2-kill"), unique("indexer"));
    let messages = generate::messages(&spec(20_000, 5_000, 3));
    produce_topic(&stack, &topic, 3, &messages).await;
    // A second per bulk request paces the replay (about 1,200 commands a second, committed each
    // second), so that every kill lands mid-replay however fast the indexer and the cluster are:
    // unpaced, one commit interval can carry the replay from the second kill's mark to the end.
    let proxy =
        support::fault_proxy::FaultProxy::delaying(&stack.new_es, Duration::from_secs(1)).await;
    let mut args = run_args_to(&stack, &topic, &group, &index, &proxy.url);
    args.extend(["--batch-max-docs".into(), "300".into()]);

    let marks = [1_000, 6_000, 12_000];
    let mut progress = Vec::new();
    for committed_at_least in marks {
        let mut child = indexer().args(&args).guarded();
        let deadline = std::time::Instant::now() + RUN_TIMEOUT;
        while committed_total(&stack, &group, &topic) < committed_at_least {
            assert!(
                std::time::Instant::now() < deadline,
                "no progress to {committed_at_least}"
            );
            assert!(child.try_wait().unwrap().is_none(), "indexer exited early");
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        await_session_expiry();
        progress.push(committed_total(&stack, &group, &topic));
    }
    // Each run committed past the kill before it and past its own mark, and its kill came before
    // the end: every restart resumed a replay still under way and moved it on.
    assert!(
        progress
            .iter()
            .zip(marks)
            .all(|(&at, mark)| (mark..20_000).contains(&at))
            && progress.windows(2).all(|w| w[0] < w[1]),
        "each kill landed mid-replay, past the one before and its mark {marks:?}: {progress:?}"
    );

    run_until_caught_up(&args);
    let records = read_topic(&stack, &topic);
    assert_index_equals(
        &stack.new_es,
        &index,
        &oracle(&records, &poison_payloads(&messages), Versions::Offset),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_share_the_partitions_and_one_leaving_mid_replay_loses_nothing() {
    let stack = stack();
    let (topic, index, group) = (
        unique("shared"),
        unique("tags-v2-shared"),
        unique("indexer"),
    );
    let messages = generate::messages(&spec(20_000, 5_000, 4));
    produce_topic(&stack, &topic, 3, &messages).await;
    // A second per bulk request paces the replay (about 800 commands a second), so that the
    // second member's join and the rebalance it causes land long before the end.
    let proxy =
        support::fault_proxy::FaultProxy::delaying(&stack.new_es, Duration::from_secs(1)).await;
    let mut args = run_args_to(&stack, &topic, &group, &index, &proxy.url);
    args.extend(["--batch-max-docs".into(), "200".into()]);
    let status_args = |port: u16| ["--status-addr".to_owned(), format!("127.0.0.1:{port}")];
    let consumed_by =
        |port: u16| get(port, "/status").and_then(|(_, s)| s["replay"]["consumed"].as_u64());

    // The second member joins a group whose first member is already consuming. Joining at the
    // same moment is the case the test broker gets wrong: it has formed the group with every
    // partition on one member and none on the other.
    let (first_port, second_port) = (free_port(), free_port());
    let mut first = indexer()
        .args(&args)
        .args(status_args(first_port))
        .guarded();
    wait_for("the first member to consume", RUN_TIMEOUT, || {
        consumed_by(first_port).filter(|n| *n > 0)
    });
    let mut second = indexer()
        .args(&args)
        .args(status_args(second_port))
        .guarded();
    wait_for(
        "the second member to be given partitions",
        RUN_TIMEOUT,
        || consumed_by(second_port).filter(|n| *n > 0),
    );
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    terminate(&first);
    let status = wait_with_timeout(&mut first, Duration::from_secs(60));
    assert!(status.success(), "SIGTERM drains and exits 0, got {status}");
    let first_consumed = consumed(&stdout_of(&mut first));
    let left_at = committed_total(&stack, &group, &topic);
    assert!(
        left_at < 20_000,
        "the first instance left mid-replay ({left_at})"
    );

    loop {
        let positions = committed_and_high(&stack, &group, &topic);
        if positions.iter().all(|(_, c, h)| *c == Some(*h)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the remaining instance did not finish the topic: (partition, committed, high) {positions:?}"
        );
        assert!(
            second.try_wait().unwrap().is_none(),
            "second instance exited early"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    terminate(&second);
    assert!(wait_with_timeout(&mut second, Duration::from_secs(60)).success());
    let second_consumed = consumed(&stdout_of(&mut second));
    assert!(
        first_consumed > 0 && second_consumed > 0,
        "both instances consumed: {first_consumed} and {second_consumed}"
    );
    assert!(
        first_consumed + second_consumed >= 20_000,
        "together they saw the whole topic"
    );

    let records = read_topic(&stack, &topic);
    assert_index_equals(
        &stack.new_es,
        &index,
        &oracle(&records, &poison_payloads(&messages), Versions::Offset),
    )
    .await;
    // Instances joining and leaving rebalance the group: dead letters are at least once.
    assert_dead_letters(
        &stack,
        &topic,
        &format!("{topic}.dlq"),
        &records,
        &messages,
        Letters::AtLeastOnce,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reset_to_earliest_is_refused_when_membership_is_unknown_and_forced_resets_to_zero() {
    let stack = stack();
    let (topic, index, group) = (unique("reset"), unique("tags-v2-reset"), unique("indexer"));
    let messages = generate::messages(&spec(600, 100, 5));
    produce_topic(&stack, &topic, 3, &messages).await;
    run_until_caught_up(&run_args(&stack, &topic, &group, &index));
    assert_eq!(committed_total(&stack, &group, &topic), 600);

    let mut args = run_args(&stack, &topic, &group, &index);
    args.push("--reset-to-earliest".into());
    let output = indexer()
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "refused: {stderr}");
    assert!(
        stderr.contains("cannot tell whether group") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        committed_total(&stack, &group, &topic),
        600,
        "a refused reset changes nothing"
    );

    args.push("--force".into());
    let summary = run_until_caught_up(&args);
    assert!(
        summary.contains("600 consumed"),
        "the forced reset replays everything: {summary}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_during_startup_exits_zero_at_once_without_consuming() {
    let stack = stack();
    // An "Elasticsearch" that accepts connections and never answers holds the startup in its
    // index check for as long as the request timeout (60 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let es_url = format!("http://{}", silent.local_addr().unwrap());
    let (topic, index, group) = (
        unique("startup"),
        unique("tags-v2-startup"),
        unique("indexer"),
    );
    produce_topic(&stack, &topic, 3, &generate::messages(&spec(30, 10, 6))).await;
    let mut args = run_args_to(&stack, &topic, &group, &index, &es_url);
    args.extend(["--request-timeout-secs".into(), "60".into()]);
    let mut child = indexer().args(&args).guarded();
    // The indexer has connected: it is inside its startup now.
    silent.set_nonblocking(true).unwrap();
    let (_held, _) = wait_for(
        "the indexer to connect to the silent cluster",
        Duration::from_secs(60),
        || silent.accept().ok(),
    );
    terminate(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(10));
    let out = stdout_of(&mut child);
    assert!(status.success(), "exit {status}: {out}");
    assert!(
        out.contains("stopped during startup, before the replay began"),
        "{out}"
    );
    assert_eq!(
        committed_total(&stack, &group, &topic),
        0,
        "nothing was committed"
    );
}

/// Collects a child's stderr as it comes, for checks made while the child runs.
fn stderr_so_far(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (pipe, sink) = (child.stderr.take().unwrap(), std::sync::Arc::clone(&seen));
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    seen
}

/// Forwards every connection to `127.0.0.1:port` to `upstream` (`http://host:port`): a cluster
/// that comes up at an address the indexer was already trying.
async fn forward_from(port: u16, upstream: &str) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let upstream = upstream.trim_start_matches("http://").to_owned();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_up_says_at_once_what_it_waits_for_and_starts_when_it_comes() {
    let stack = stack();
    // No broker at 127.0.0.1:1: the log and the status endpoint name it, and a SIGTERM ends the
    // wait with exit 0.
    let status_port = free_port();
    let mut args = run_args(&stack, &unique("nobroker"), &unique("indexer"), "unused");
    let brokers = args.iter().position(|a| a == "--brokers").unwrap() + 1;
    args[brokers] = "127.0.0.1:1".into();
    args.extend(["--status-addr".into(), format!("127.0.0.1:{status_port}")]);
    let mut child = indexer()
        .args(&args)
        .stderr(std::process::Stdio::piped())
        .guarded();
    let log = stderr_so_far(&mut child);
    let waiting = wait_for(
        "/healthz to name the broker",
        Duration::from_secs(30),
        || {
            get(status_port, "/healthz")
                .filter(|(code, body)| *code == 200 && body["waiting_for"].is_string())
        },
    );
    assert!(
        waiting.1["waiting_for"]
            .as_str()
            .unwrap()
            .contains("the Kafka brokers at 127.0.0.1:1"),
        "{}",
        waiting.1
    );
    let (ready, _) = get(status_port, "/readyz").unwrap();
    assert_eq!(ready, 503);
    wait_for(
        "a log line naming the broker",
        Duration::from_secs(30),
        || {
            log.lock()
                .unwrap()
                .contains("waiting for the Kafka brokers at 127.0.0.1:1")
                .then_some(())
        },
    );
    terminate(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert!(status.success(), "exit {status}");

    // A cluster that is not there yet: the log names it at once, and the replay starts once
    // the cluster answers at that address.
    let (topic, index, group) = (
        unique("nocluster"),
        unique("tags-v2-late"),
        unique("indexer"),
    );
    let messages = generate::messages(&spec(300, 60, 12));
    produce_topic(&stack, &topic, 2, &messages).await;
    let es_port = free_port();
    let args = run_args_to(
        &stack,
        &topic,
        &group,
        &index,
        &format!("http://127.0.0.1:{es_port}"),
    );
    let mut child = indexer()
        .args(&args)
        .args(["--until-caught-up"])
        .stderr(std::process::Stdio::piped())
        .guarded();
    let log = stderr_so_far(&mut child);
    wait_for(
        "a log line naming the cluster",
        Duration::from_secs(30),
        || {
            log.lock()
                .unwrap()
                .contains(&format!(
                    "waiting for Elasticsearch at http://127.0.0.1:{es_port}/"
                ))
                .then_some(())
        },
    );
    forward_from(es_port, &stack.new_es).await;
    let status = wait_with_timeout(&mut child, RUN_TIMEOUT);
    let out = stdout_of(&mut child);
    assert!(status.success(), "exit {status}: {out}");
    assert!(out.contains("300 consumed"), "{out}");
    let expected = oracle(
        &read_topic(&stack, &topic),
        &poison_payloads(&messages),
        Versions::Offset,
    );
    assert_index_equals(&stack.new_es, &index, &expected).await;
    println!("RESULT start-up waits: the broker named on /healthz, /readyz and in the log, SIGTERM exit 0; the cluster named in the log, the replay started once it answered: {}", out.trim());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_indexer_commits_at_once_rather_than_at_its_next_commit_tick() {
    let stack = stack();
    let (topic, index, group) = (unique("idle"), unique("tags-v2-idle"), unique("indexer"));
    produce_topic(&stack, &topic, 3, &generate::messages(&spec(2_000, 500, 7))).await;
    // The regular commits come every ten minutes, and the first tick fires at start-up, before
    // anything is final: only the commit made when the work runs out can close the lag in time.
    let mut args = run_args(&stack, &topic, &group, &index);
    let interval = args
        .iter()
        .position(|a| a == "--commit-interval-ms")
        .unwrap()
        + 1;
    args[interval] = "600000".into();
    let mut child = indexer().args(&args).guarded();
    wait_for("every partition committed to its end", RUN_TIMEOUT, || {
        committed_and_high(&stack, &group, &topic)
            .iter()
            .all(|(_, committed, high)| *committed == Some(*high))
            .then_some(())
    });
    assert!(
        wait_a_while(&mut child, Duration::ZERO).is_none(),
        "the commits came from the running loop, not from its shutdown"
    );
    terminate(&child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    assert!(status.success(), "exit {status}");
}

/// The sums of the statsd lines named `name` (`dual_indexer.<name>:<count>|c|#tags`), and how many
/// lines there were.
fn statsd_sum(lines: &[String], name: &str) -> (u64, usize) {
    let prefix = format!("dual_indexer.{name}:");
    let counts: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split('|').next().unwrap().parse().unwrap())
        .collect();
    (counts.iter().sum(), counts.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn statsd_gets_every_count_of_a_run_summed_per_commit_tick() {
    let stack = stack();
    let (topic, index, group) = (unique("statsd"), unique("statsd"), unique("statsd"));
    let commands = 3_000;
    let messages = generate::messages(&GeneratorSpec {
        poison_every: 0,
        ..spec(commands, 500, 41)
    });
    produce_topic(&stack, &topic, 3, &messages).await;
    // The agent reads while the run goes on: datagrams beyond its receive buffer would be lost.
    let agent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    agent
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let address = agent.local_addr().unwrap().to_string();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listening = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let (mut lines, mut datagram) = (Vec::new(), vec![0u8; 65_536]);
            loop {
                match agent.recv(&mut datagram) {
                    Ok(n) => lines.extend(
                        String::from_utf8_lossy(&datagram[..n])
                            .lines()
                            .map(str::to_owned),
                    ),
                    Err(_) if done.load(std::sync::atomic::Ordering::SeqCst) => return lines,
                    Err(_) => {}
                }
            }
        })
    };
    let mut args = run_args(&stack, &topic, &group, &index);
    args.extend(["--statsd".into(), address.clone()]);
    run_until_caught_up(&args);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let lines = listening.join().unwrap();
    let (consumed, consumed_lines) = statsd_sum(&lines, "messages.consumed");
    assert_eq!(
        consumed,
        commands as u64,
        "every message counted, the last ones too; statsd got {} lines: {:?}",
        lines.len(),
        lines
            .iter()
            .filter_map(|l| l.split(':').next())
            .collect::<std::collections::BTreeSet<_>>()
    );
    let finished: u64 = [
        "documents.indexed",
        "documents.deleted",
        "documents.already_applied",
    ]
    .iter()
    .map(|name| statsd_sum(&lines, name).0)
    .sum();
    assert_eq!(finished, commands as u64, "every write counted once");

    // Three partitions, a commit tick a second: a handful of lines, not one per message.
    assert!(
        consumed_lines < 100,
        "{consumed_lines} lines for {commands} messages: the counts are not summed per tick"
    );
}
