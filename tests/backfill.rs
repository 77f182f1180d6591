//! `backfill` against two ES stand-ins and the real broker: the copy equals the transform of the
//! legacy index, a killed copy resumes without re-reading finished slices, a copy racing the live
//! replay ends in the oracle's state, and documents that cannot be copied are dead-lettered.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use dual_indexer::generate::{self, GeneratorSpec};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use support::*;

/// A scratch directory for one test's checkpoint and dead-letter files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One test's indices, corpus and files: a legacy index loaded with `docs` documents, an empty
/// new index, a scratch directory, and the `backfill` arguments between them.
struct Setup {
    legacy_index: String,
    new_index: String,
    commands: Vec<Value>,
    dir: PathBuf,
    args: Vec<String>,
}

async fn setup(stack: &Stack, docs: usize, seed: u64, name: &str) -> Setup {
    let (legacy_index, new_index) = (unique("bf-legacy"), unique("bf-new"));
    let commands = corpus(docs, seed);
    load_legacy(&stack.legacy_es, &legacy_index, &commands).await;
    create_new_index(&stack.new_es, &new_index).await;
    let dir = scratch(name);
    let args = backfill_args(stack, &legacy_index, &new_index, &dir);
    Setup {
        legacy_index,
        new_index,
        commands,
        dir,
        args,
    }
}

fn backfill_args(stack: &Stack, from: &str, to: &str, dir: &Path) -> Vec<String> {
    [
        "backfill",
        "--from-url",
        &stack.legacy_es,
        "--from-index",
        from,
        "--to-url",
        &stack.new_es,
        "--to-index",
        to,
        "--checkpoint",
        &dir.join("checkpoint.json").display().to_string(),
        "--dead-letter-file",
        &dir.join("dead-letters.ndjson").display().to_string(),
        "--progress-secs",
        "2",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs a backfill to its end and returns its exit code and JSON summary.
fn backfill(args: &[String], extra: &[&str]) -> (i32, Value) {
    let output = indexer().args(args).args(extra).output().unwrap();
    let code = output.status.code().unwrap_or(-1);
    let summary = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (code, summary)
}

fn total(summary: &Value, field: &str) -> u64 {
    summary["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[field].as_u64().unwrap())
        .sum()
}

/// Runs `verify` between the two indices and returns its exit code.
fn verify(stack: &Stack, legacy_index: &str, new_index: &str) -> i32 {
    let output = indexer()
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
            "--sample-queries",
            "20",
        ])
        .output()
        .unwrap();
    let code = output.status.code().unwrap_or(-1);
    if code != 0 {
        eprintln!("{}", String::from_utf8_lossy(&output.stdout));
    }
    code
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_documents_in_four_slices_equal_the_transform_and_verify_clean() {
    let stack = stack();
    let Setup {
        legacy_index,
        new_index,
        commands,
        dir,
        args,
    } = setup(&stack, 20_000, 11, "bf-20k").await;
    let (code, summary) = backfill(&args, &["--slices", "4", "--bulk-load"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["ending"], "complete");
    assert_eq!(summary["slices"].as_array().unwrap().len(), 4);
    assert_eq!(summary["read_this_run"], 20_000);
    assert_eq!(total(&summary, "written"), 20_000);
    assert_eq!(total(&summary, "dead_lettered"), 0);
    for slice in summary["slices"].as_array().unwrap() {
        let read = slice["read"].as_u64().unwrap();
        assert!(
            (2_500..=7_500).contains(&read),
            "slices are roughly even: {summary}"
        );
    }

    // The oracle, built from the commands independently of the transform under test.
    assert_index_equals(&stack.new_es, &new_index, &expected(&commands)).await;
    let stored = dump_index(&stack.new_es, &new_index).await;
    assert!(
        stored.values().all(|s| s.version == 0),
        "backfilled documents carry external version 0"
    );
    assert_eq!(verify(&stack, &legacy_index, &new_index), 0);

    // Bulk-load settings and gc_deletes are back as they were.
    let client = dual_indexer::es::client(&stack.new_es, Duration::from_secs(60)).unwrap();
    let settings = dual_indexer::es::request_ok(
        &client,
        elasticsearch::http::Method::Get,
        &format!("/{new_index}/_settings?flat_settings=true"),
        None,
        "settings",
    )
    .await
    .unwrap();
    let s = &settings[&new_index]["settings"];
    assert_eq!(s["index.refresh_interval"], Value::Null, "{settings}");
    assert_eq!(s["index.gc_deletes"], Value::Null, "{settings}");
    assert_ne!(s["index.number_of_replicas"], "0", "{settings}");

    // Running it again is a no-op that says so.
    let (code, again) = backfill(&args, &[]);
    assert_eq!(code, 0);
    assert_eq!(again["ending"], "already_complete");
    assert_eq!(again["read_this_run"], 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backfill_resumes_without_rereading_finished_slices() {
    let stack = stack();
    let Setup {
        legacy_index,
        new_index,
        commands,
        dir,
        args,
    } = setup(&stack, 6_000, 12, "bf-resume").await;
    // Six slices, two at a time, slowly: slices finish in turns, so a kill lands mid-way.
    let slow = [
        "--slices",
        "6",
        "--concurrency",
        "2",
        "--batch-size",
        "200",
        "--max-docs-per-sec",
        "1500",
    ];
    let mut first = indexer().args(&args).args(slow).guarded();
    let checkpoint_path = dir.join("checkpoint.json");
    await_partial_backfill(&checkpoint_path);
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let snapshot: Value =
        serde_json::from_slice(&std::fs::read(&checkpoint_path).unwrap()).unwrap();
    let slices_at_kill = snapshot["slices"].as_array().unwrap().clone();
    assert!(
        slices_at_kill.iter().any(|s| s["done"] == false),
        "killed before the end"
    );

    // Without --resume, an unfinished checkpoint is refused rather than overwritten.
    let (code, _) = backfill(&args, &[]);
    assert_eq!(code, 2);

    let (code, resumed) = backfill(&args, &["--resume"]);
    assert_eq!(code, 0, "{resumed}");
    assert_eq!(resumed["ending"], "complete");
    let after = resumed["slices"].as_array().unwrap();
    let (mut finished_before, mut read_before, mut unfinished) = (0, 0, 0);
    for (before, now) in slices_at_kill.iter().zip(after) {
        read_before += before["read"].as_u64().unwrap();
        if before["done"] == true {
            finished_before += before["read"].as_u64().unwrap();
            assert_eq!(now["read_this_run"], 0, "finished slice read again: {now}");
            assert_eq!(now["read"], before["read"], "{now}");
        } else {
            // An unfinished slice continues where its checkpoint left it, not from its start.
            unfinished += 1;
            assert_eq!(
                now["restarts"], before["restarts"],
                "slice restarted: {now}"
            );
        }
    }
    assert!(finished_before > 0);
    // Exactly the documents the checkpoint had not recorded at the kill are read again: a slice
    // started over would re-read what it had recorded too.
    let read_on_resume = resumed["read_this_run"].as_u64().unwrap();
    assert!(unfinished > 0);
    assert_eq!(
        read_on_resume,
        6_000 - read_before,
        "the resumed run read {read_on_resume}; {} were left in {unfinished} unfinished slices",
        6_000 - read_before
    );
    assert_index_equals(&stack.new_es, &new_index, &expected(&commands)).await;
    assert_eq!(verify(&stack, &legacy_index, &new_index), 0);

    let (code, again) = backfill(&args, &["--resume"]);
    assert_eq!(code, 0);
    assert_eq!(again["ending"], "already_complete");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Commits `group`'s offsets on `topic` at the current high watermarks: to this group, everything
/// produced so far is outside retention.
fn commit_at_end(stack: &Stack, group: &str, topic: &str) {
    let consumer: BaseConsumer = kafka_config(stack)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for (partition, _, high) in committed_and_high(stack, group, topic) {
        list.add_partition_offset(topic, partition, Offset::Offset(high))
            .unwrap();
    }
    consumer.commit(&list, CommitMode::Sync).unwrap();
}

fn caught_up(stack: &Stack, group: &str, topic: &str) -> bool {
    committed_and_high(stack, group, topic)
        .iter()
        .all(|(_, committed, high)| *committed == Some(*high))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backfill_racing_the_live_replay_ends_in_the_newest_state() {
    let stack = stack();
    let topic = unique("bf-race");
    let (legacy_index, new_index) = (unique("bf-legacy"), unique("bf-new"));
    let (legacy_group, new_group) = (unique("legacy-indexer"), unique("indexer"));
    let messages = generate::messages(&GeneratorSpec {
        count: 5_000,
        ids: 1_200,
        tags: 6,
        seed: 13,
        poison_every: 0,
    });
    let (history, tail) = messages.split_at(2_500);

    // The legacy indexer applies the history; then, for the new indexer, the history is past
    // retention: its group starts at the end of it.
    produce_topic(&stack, &topic, 3, history).await;
    let legacy_args = run_args_to(
        &stack,
        &topic,
        &legacy_group,
        &legacy_index,
        &stack.legacy_es,
    );
    let legacy_until_caught_up = |label: &str| {
        let mut legacy = indexer()
            .args(&legacy_args)
            .args(["--schema", "legacy", "--until-caught-up"])
            .guarded();
        assert!(
            wait_with_timeout(&mut legacy, Duration::from_secs(240)).success(),
            "legacy indexer ({label})"
        );
    };
    legacy_until_caught_up("history");
    commit_at_end(&stack, &new_group, &topic);
    let snapshot = dump_index(&stack.legacy_es, &legacy_index).await;

    // The live replay and the backfill run at once, while the tail is produced. The backfill
    // reads the legacy index as of the history: every update and delete of the tail happened
    // after its snapshot.
    let mut live = indexer()
        .args(run_args(&stack, &topic, &new_group, &new_index))
        .guarded();
    let new_client = dual_indexer::es::client(&stack.new_es, Duration::from_secs(60)).unwrap();
    let head = format!("/{new_index}");
    for attempt in 0.. {
        let (status, _) =
            dual_indexer::es::request(&new_client, elasticsearch::http::Method::Head, &head, None)
                .await
                .unwrap();
        if status == 200 {
            break;
        }
        assert!(attempt < 600, "the live replay did not create {new_index}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = scratch("bf-race");
    let args = backfill_args(&stack, &legacy_index, &new_index, &dir);
    let mut copy = indexer()
        .args(&args)
        .args([
            "--slices",
            "4",
            "--batch-size",
            "100",
            "--max-docs-per-sec",
            "250",
        ])
        .guarded();
    let config = kafka_config(&stack);
    for chunk in tail.chunks(250) {
        generate::produce(&config, &topic, chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(wait_with_timeout(&mut copy, Duration::from_secs(240)).success());
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut copy.0.stdout.take().unwrap(), &mut stdout).unwrap();
    let summary: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(summary["ending"], "complete");
    wait_for(
        "the live replay to catch up",
        Duration::from_secs(120),
        || caught_up(&stack, &new_group, &topic).then_some(()),
    );
    terminate(&live.0);
    wait_with_timeout(&mut live, Duration::from_secs(60));

    // The legacy indexer applies the tail too, so both clusters hold the newest state.
    legacy_until_caught_up("tail");
    let records = read_topic(&stack, &topic);
    let oracle = oracle(&records, &HashSet::new(), Versions::Offset);
    assert_index_equals(&stack.new_es, &new_index, &oracle).await;
    assert_eq!(verify(&stack, &legacy_index, &new_index), 0);

    // The race was real: the backfill lost to newer live writes, and documents it copied from its
    // snapshot were deleted by the tail and stayed deleted.
    assert!(total(&summary, "kept_newer") > 0, "{summary}");
    let resurrectable: Vec<&String> = snapshot
        .keys()
        .filter(|id| !oracle.contains_key(*id))
        .collect();
    assert!(
        !resurrectable.is_empty(),
        "the tail deletes documents of the snapshot"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn documents_that_cannot_be_copied_are_dead_lettered_and_the_copy_goes_on() {
    let stack = stack();
    let (legacy_index, new_index) = (unique("bf-legacy"), unique("bf-new"));
    // A real legacy cluster can hold what the new schema refuses; a dynamic index stands in.
    let mut body = String::new();
    for i in 0..50 {
        body += &format!("{{\"index\":{{\"_id\":\"ok-{i:03}\"}}}}\n");
        body += &format!("{{\"actions\":{{\"tags\":{{\"host\":\"web-{i}\",\"env\":\"prod\"}}}},\"status\":\"open\"}}\n");
    }
    let bad = [
        (
            "bad-array",
            json!({"actions": {"tags": {"host": ["a", "b"]}}}),
            "transform",
        ),
        (
            "bad-long",
            json!({"actions": {"tags": {"note": "x".repeat(40_000)}}}),
            "transform",
        ),
        (
            "bad-field",
            json!({"actions": {"tags": {"host": "a"}}, "unexpected": "x"}),
            "mapping",
        ),
    ];
    for (id, doc, _) in &bad {
        body += &format!("{{\"index\":{{\"_id\":\"{id}\"}}}}\n{doc}\n");
    }
    bulk_ndjson(&stack.legacy_es, &legacy_index, &body).await;
    create_new_index(&stack.new_es, &new_index).await;

    let dir = scratch("bf-dead");
    let args = backfill_args(&stack, &legacy_index, &new_index, &dir);
    let (code, summary) = backfill(&args, &["--slices", "2", "--batch-size", "10"]);
    assert_eq!(code, 0, "{summary}");
    assert_eq!(summary["ending"], "complete");
    assert_eq!(total(&summary, "written"), 50);
    assert_eq!(total(&summary, "dead_lettered"), 3);

    let letters: Vec<Value> = std::fs::read_to_string(dir.join("dead-letters.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(letters.len(), 3);
    for (id, doc, class) in &bad {
        let letter = letters
            .iter()
            .find(|l| l["id"] == *id)
            .unwrap_or_else(|| panic!("{id} was not dead-lettered: {letters:?}"));
        assert_eq!(letter["class"], *class, "{letter}");
        assert_eq!(letter["source"], *doc, "the original document is kept");
        assert_eq!(letter["from_index"], legacy_index.as_str());
        assert!(!letter["reason"].as_str().unwrap().is_empty());
    }
    let stored = dump_index(&stack.new_es, &new_index).await;
    assert_eq!(stored.len(), 50);
    assert!(stored.keys().all(|id| id.starts_with("ok-")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn backfill_refuses_to_resume_nothing_and_names_bad_values() {
    let dir = scratch("bf-args");
    let output = indexer()
        .args([
            "backfill",
            "--resume",
            "--checkpoint",
            &dir.join("none.json").display().to_string(),
        ])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("no checkpoint at"), "{err}");

    let output = indexer()
        .args(["backfill", "--versions", "newest"])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("accepted: yield, legacy-version"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A refusal that asking again cannot change is shown at once, not after ten attempts per
/// slice: here a legacy cluster that refuses every search with 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_read_is_not_retried() {
    let stack = stack();
    let setup = setup(&stack, 200, 11, "bf-refused").await;
    let plan = fault_proxy::Plan {
        refuse_reads: true,
        ..fault_proxy::Plan::default()
    };
    let proxy = fault_proxy::FaultProxy::start(&stack.legacy_es, plan).await;
    let mut args = setup.args.clone();
    let from = args.iter().position(|a| a == "--from-url").unwrap() + 1;
    args[from] = proxy.url.clone();
    let output = indexer()
        .args(&args)
        .args(["--slices", "2"])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("search_phase_execution_exception"), "{err}");
    let refused = proxy.counts().searches_refused.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&refused),
        "one refused read per slice at most, then the error: {refused} reads were refused"
    );
    println!("RESULT refused read: 2 slices, {refused} reads refused with HTTP 400, exit 2");
    std::fs::remove_dir_all(&setup.dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_backfill_restores_the_target_settings_and_resumes() {
    let stack = stack();
    let Setup {
        legacy_index: _,
        new_index,
        commands,
        dir,
        args,
    } = setup(&stack, 2_000, 14, "bf-stop").await;
    let slow = [
        "--bulk-load",
        "--batch-size",
        "100",
        "--max-docs-per-sec",
        "400",
    ];
    let mut first = indexer().args(&args).args(slow).guarded();
    let checkpoint_path = dir.join("checkpoint.json");
    let new_settings = || async {
        let client = dual_indexer::es::client(&stack.new_es, Duration::from_secs(60)).unwrap();
        let reply = dual_indexer::es::request_ok(
            &client,
            elasticsearch::http::Method::Get,
            &format!("/{new_index}/_settings?flat_settings=true"),
            None,
            "settings",
        )
        .await
        .unwrap();
        reply[&new_index]["settings"].clone()
    };
    wait_for("a first page", Duration::from_secs(60), || {
        let c: Value = serde_json::from_slice(&std::fs::read(&checkpoint_path).ok()?).ok()?;
        (c["slices"]
            .as_array()?
            .iter()
            .any(|s| s["read"].as_u64() > Some(0)))
        .then_some(())
    });
    let during = new_settings().await;
    assert_eq!(during["index.refresh_interval"], "-1", "{during}");
    assert_eq!(during["index.gc_deletes"], "12h", "{during}");

    terminate(&first.0);
    let status = wait_with_timeout(&mut first, Duration::from_secs(60));
    assert_eq!(status.code(), Some(130), "a stopped backfill says so");
    let after = new_settings().await;
    assert_eq!(after["index.refresh_interval"], Value::Null, "{after}");
    assert_eq!(after["index.gc_deletes"], Value::Null, "{after}");
    let checkpoint: Value =
        serde_json::from_slice(&std::fs::read(&checkpoint_path).unwrap()).unwrap();
    assert!(checkpoint["slices"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["done"] == false));
    assert_eq!(checkpoint["changed_settings"]["bulk_load"], false);

    let (code, resumed) = backfill(&args, &["--resume", "--bulk-load"]);
    assert_eq!(code, 0, "{resumed}");
    assert_eq!(resumed["ending"], "complete");
    assert_index_equals(&stack.new_es, &new_index, &expected(&commands)).await;
    let end = new_settings().await;
    assert_eq!(end["index.refresh_interval"], Value::Null, "{end}");
    std::fs::remove_dir_all(&dir).unwrap();
}
