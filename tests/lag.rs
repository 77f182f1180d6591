//! Lag, readiness and stalls against the real broker and ES stand-ins.

mod support;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dual_indexer::generate::{self, GeneratorSpec};
use dual_indexer::lag::monitor::{ClientClosed, OffsetsClient};
use dual_indexer::source::commands::CommandSource;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use support::*;

fn lag_json(stack: &Stack, args: &[&str]) -> (i32, Value) {
    let output = indexer()
        .args([
            "lag",
            "--brokers",
            &stack.brokers,
            "--json",
            "--interval-secs",
            "1",
            "--window-secs",
            "1",
        ])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let last = text
        .lines()
        .last()
        .unwrap_or_else(|| panic!("lag printed nothing; status {:?}", output.status));
    (
        output.status.code().unwrap(),
        serde_json::from_str(last).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn lag_reports_what_another_group_really_committed() {
    let stack = stack();
    let topic = unique("lag");
    let messages = generate::messages(&GeneratorSpec {
        count: 300,
        ids: 50,
        poison_every: 0,
        ..GeneratorSpec::default()
    });
    produce_topic(&stack, &topic, 3, &messages).await;
    let legacy = unique("legacy");
    let consumer: BaseConsumer = kafka_config(&stack)
        .set("group.id", &legacy)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for (p, offset) in [(0, 10), (1, 20), (2, 30)] {
        list.add_partition_offset(&topic, p, Offset::Offset(offset))
            .unwrap();
    }
    consumer.commit(&list, CommitMode::Sync).unwrap();
    let highs: Vec<i64> = committed_and_high(&stack, &legacy, &topic)
        .iter()
        .map(|(_, _, h)| *h)
        .collect();

    let (code, report) = lag_json(&stack, &["--group", &legacy, "--topic", &topic]);
    assert_eq!(code, 0);
    for (row, expected) in report["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .zip([10, 20, 30])
    {
        let p = row["partition"].as_i64().unwrap() as usize;
        assert_eq!(row["committed"], expected, "{row}");
        assert_eq!(row["lag"].as_i64().unwrap(), highs[p] - expected, "{row}");
    }
    assert_eq!(report["total_lag"].as_i64().unwrap(), 300 - 60);

    let other = unique("new");
    let (_, report) = lag_json(
        &stack,
        &[
            "--group",
            &other,
            "--legacy-group",
            &legacy,
            "--topic",
            &topic,
        ],
    );
    assert_eq!(
        report["total_gap_to_legacy"], 60,
        "nothing committed yet, 60 behind the legacy group: {report}"
    );

    let exit_code = |extra: &[&str]| {
        let args = [
            &["--group", legacy.as_str(), "--topic", topic.as_str()],
            extra,
        ]
        .concat();
        lag_json(&stack, &args).0
    };
    assert_eq!(
        exit_code(&["--fail-if-lag-above", "0"]),
        1,
        "lag 240 is above 0"
    );
    assert_eq!(exit_code(&["--fail-if-lag-above", "1000"]), 0);
    assert_eq!(
        exit_code(&["--fail-unless-caught-up"]),
        1,
        "a group with lag is not caught up"
    );
}

fn start_run(
    stack: &Stack,
    es_url: &str,
    topic: &str,
    index: &str,
    port: u16,
    extra: &[&str],
) -> Guarded {
    let group = unique("indexer");
    let args = run_args_to(stack, topic, &group, index, es_url);
    indexer()
        .args(&args)
        .args(["--status-addr", &format!("127.0.0.1:{port}")])
        .args(extra)
        .guarded()
}

#[tokio::test(flavor = "multi_thread")]
async fn during_a_replay_the_lag_falls_to_zero_and_readyz_flips_to_200() {
    let stack = stack();
    let (topic, index, port) = (unique("ready"), unique("tags-v2-ready"), free_port());
    let messages = generate::messages(&GeneratorSpec {
        count: 5_000,
        ids: 1_000,
        seed: 11,
        ..GeneratorSpec::default()
    });
    produce_topic(&stack, &topic, 3, &messages).await;
    // Secrets in the environment (the stand-ins ignore them) must not reach /status.
    let mut args = run_args(&stack, &topic, &unique("indexer"), &index);
    args.extend(["--status-addr".into(), format!("127.0.0.1:{port}")]);
    let mut child = indexer()
        .args(&args)
        .env("DUAL_INDEXER_ES_API_KEY", "status-secret-api-key-1")
        .env("DUAL_INDEXER_KAFKA_SASL_PASSWORD", "status-secret-kafka-2")
        .guarded();

    let (code, _) = wait_for("the status endpoint", Duration::from_secs(30), || {
        get(port, "/readyz")
    });
    assert_eq!(
        code, 503,
        "not ready before the lag has been zero for a window"
    );
    wait_for("/readyz to turn 200", Duration::from_secs(180), || {
        (get(port, "/readyz")?.0 == 200).then_some(())
    });
    let (code, status) = get(port, "/status").unwrap();
    assert_eq!(code, 200);
    assert_eq!(status["lag"]["status"], "CAUGHT_UP", "{status}");
    assert_eq!(status["lag"]["total_lag"], 0);
    assert_eq!(status["replay"]["consumed"], 5_000, "{status}");
    assert_eq!(get(port, "/healthz").unwrap().0, 200);
    let text = status.to_string();
    assert!(
        !text.contains("status-secret-api-key-1") && !text.contains("status-secret-kafka-2"),
        "{text}"
    );

    terminate(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(60)).success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_elasticsearch_makes_the_lag_stalled_and_the_replay_recovers_without_loss() {
    let stack = stack();
    let binary = std::env::var("OSMEM_BIN").expect("OSMEM_BIN is exported by scripts/stack.sh env");
    let es_port = free_port();
    let mut es = Command::new(binary)
        .args([
            "--addr",
            &format!("127.0.0.1:{es_port}"),
            "--no-stdin-watch",
            "--no-ja",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .guarded();
    let es_url = format!("http://127.0.0.1:{es_port}");
    wait_for("the private ES stand-in", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", es_port)).ok()
    });

    let (topic, index, port) = (unique("stall"), unique("tags-v2-stall"), free_port());
    let messages = generate::messages(&GeneratorSpec {
        count: 20_000,
        ids: 5_000,
        seed: 12,
        ..GeneratorSpec::default()
    });
    produce_topic(&stack, &topic, 3, &messages).await;
    let mut child = start_run(
        &stack,
        &es_url,
        &topic,
        &index,
        port,
        &[
            "--stall-secs",
            "3",
            "--request-timeout-secs",
            "5",
            "--batch-max-docs",
            "200",
        ],
    );

    wait_for("replay progress", Duration::from_secs(60), || {
        let (_, status) = get(port, "/status")?;
        (status["replay"]["indexed"].as_u64()? > 500).then_some(())
    });
    let signal = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &es.id().to_string()])
            .status()
            .unwrap()
            .success())
    };
    signal("-STOP");
    let stalled = wait_for("STALLED", Duration::from_secs(60), || {
        let (_, status) = get(port, "/status")?;
        (status["lag"]["status"] == "STALLED").then_some(status)
    });
    assert!(
        stalled["lag"]["total_lag"].as_i64().unwrap() > 0,
        "{stalled}"
    );
    assert_eq!(get(port, "/readyz").unwrap().0, 503);
    assert_eq!(
        get(port, "/healthz").unwrap().0,
        200,
        "the process is alive while Elasticsearch is not"
    );
    signal("-CONT");

    wait_for(
        "CAUGHT_UP after the outage",
        Duration::from_secs(240),
        || (get(port, "/readyz")?.0 == 200).then_some(()),
    );
    terminate(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(60)).success());
    let records = read_topic(&stack, &topic);
    assert_index_equals(
        &es_url,
        &index,
        &oracle(&records, &poison_payloads(&messages), Versions::Offset),
    )
    .await;
    let _ = es.kill();
    let _ = es.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_leaves_its_group_even_while_lag_samples_run_back_to_back() {
    // Under load a lag sample can take longer than the sampling interval, and samples then run
    // back to back through the replay's own consumer. The close must still leave the group:
    // a member that exits without leaving keeps its partitions until its session expires (the
    // test broker never expires it), and the next member of the group is assigned nothing.
    let stack = stack();
    let (topic, group) = (unique("lag-close"), unique("indexer"));
    let messages = generate::messages(&GeneratorSpec {
        count: 30,
        ids: 10,
        tags: 2,
        seed: 41,
        poison_every: 0,
    });
    produce_topic(&stack, &topic, 3, &messages).await;
    let config = kafka_config(&stack);
    let mut source =
        CommandSource::connect(&config, &group, &topic, Duration::from_secs(5)).unwrap();
    source.subscribe(None).unwrap();
    let reader = source.reader();
    tokio::time::timeout(Duration::from_secs(60), reader.recv())
        .await
        .expect("the first member receives a message")
        .unwrap();
    drop(reader);

    let handle = source.monitor_handle();
    let sampled_topic = topic.clone();
    // Set once the close returned, so that the sampler ends whatever the close did.
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let sampler = std::thread::spawn(move || {
        let mut calls = 0u64;
        while !stopped.load(Ordering::Relaxed) {
            match handle.watermarks(&sampled_topic, 0) {
                Err(e) if e.is::<ClientClosed>() => return (calls, true),
                Err(e) => panic!("a sample failed before the close: {e}"),
                Ok(_) => calls += 1,
            }
        }
        (calls, false)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closing = std::time::Instant::now();
    source.close().await;
    let took = closing.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (calls, refused) = sampler.join().unwrap();
    assert!(calls > 0, "the samples ran while the close began");
    // The close gives up on leaving after 10 s; waiting that long means it never left.
    assert!(
        took < Duration::from_secs(8),
        "the close waited {took:?} for the samples, after {calls} calls"
    );
    assert!(
        refused,
        "once the close began, the handle refused to sample"
    );

    // The group is free: a new member is assigned partitions and reads the topic.
    let next: StreamConsumer = config
        .clone()
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    next.subscribe(&[&topic]).unwrap();
    tokio::time::timeout(Duration::from_secs(60), next.recv())
        .await
        .expect("a new member of the group is assigned partitions and reads")
        .unwrap();
}
