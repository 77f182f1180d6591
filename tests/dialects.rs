//! `backfill`, `verify` and `run` through the dialect layers of the test proxy: Elasticsearch 8,
//! Elasticsearch 6.8 and OpenSearch 2, each reproducing only its version's documented
//! behaviour in front of the ES stand-in (docs/compatibility.md lists the rules). Each run ends
//! in the oracle's state, and no request is refused by the dialect it claims to speak.

mod support;

use std::collections::HashSet;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use support::fault_proxy::{Dialect, FaultProxy, Plan};
use support::*;

/// A proxy in front of `upstream` speaking `dialect`, and nothing else.
async fn speaking(upstream: &str, dialect: Dialect) -> FaultProxy {
    let plan = Plan {
        dialect: Some(dialect),
        ..Plan::default()
    };
    FaultProxy::start(upstream, plan).await
}

/// The dialects of each side: a legacy cluster may be any supported version, the new one 7.10+.
fn sides(dialect: Dialect) -> (Dialect, Dialect) {
    match dialect {
        Dialect::Elasticsearch68 => (Dialect::Elasticsearch68, Dialect::Elasticsearch8),
        other => (other, other),
    }
}

/// Runs the indexer to its end and returns its exit code, stdout and stderr.
fn run_indexer(args: &[String]) -> (i32, String, String) {
    let output = indexer()
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// `verify` between the proxies, as JSON.
fn verify(
    legacy: &FaultProxy,
    legacy_index: &str,
    new: &FaultProxy,
    new_index: &str,
) -> (i32, Value) {
    let (code, stdout, stderr) = run_indexer(&strings(&[
        "verify",
        "--legacy-url",
        &legacy.url,
        "--legacy-index",
        legacy_index,
        "--es-url",
        &new.url,
        "--index",
        new_index,
        "--page-size",
        "250",
        "--sample-queries",
        "20",
        "--json",
    ]));
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("verify printed no report ({e}): {}", tail(&stderr, 20)));
    (code, report)
}

/// Backfills 1,500 legacy documents through `dialect`, checks the copy against the oracle, then
/// verifies clean and with planted differences.
async fn backfill_and_verify_through(dialect: Dialect) {
    let stack = stack();
    let (legacy_dialect, new_dialect) = sides(dialect);
    let legacy = speaking(&stack.legacy_es, legacy_dialect).await;
    let new = speaking(&stack.new_es, new_dialect).await;
    let (legacy_index, new_index) = (unique("dl-legacy"), unique("dl-new"));
    let commands = corpus(1_500, 31);
    load_legacy(&stack.legacy_es, &legacy_index, &commands).await;
    create_new_index(&stack.new_es, &new_index).await;
    let dir = std::env::temp_dir().join(unique("dl"));
    std::fs::create_dir_all(&dir).unwrap();

    let (code, stdout, stderr) = run_indexer(&strings(&[
        "backfill",
        "--from-url",
        &legacy.url,
        "--from-index",
        &legacy_index,
        "--to-url",
        &new.url,
        "--to-index",
        &new_index,
        "--slices",
        "3",
        "--batch-size",
        "200",
        "--checkpoint",
        &dir.join("checkpoint.json").display().to_string(),
        "--dead-letter-file",
        &dir.join("dead.ndjson").display().to_string(),
        "--json",
    ]));
    assert_eq!(code, 0, "{dialect:?}: {}", tail(&stderr, 30));
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["ending"], "complete", "{summary}");
    assert_eq!(summary["read_this_run"], 1_500, "{summary}");
    assert_eq!(summary["slices"].as_array().unwrap().len(), 3);
    assert_index_equals(&stack.new_es, &new_index, &expected(&commands)).await;
    let reading = match legacy_dialect {
        Dialect::Elasticsearch8 => "point in time (_pit)",
        _ => "sliced scroll",
    };
    assert!(
        stderr.contains(reading),
        "{dialect:?} reads by {reading}: {}",
        tail(&stderr, 30)
    );

    let (code, report) = verify(&legacy, &legacy_index, &new, &new_index);
    assert_eq!(code, 0, "{dialect:?}: {report}");
    let docs = &report["documents"];
    assert_eq!(docs["checked"], 1_500, "{report}");
    assert_eq!(docs["matching"], 1_500, "{report}");

    // Planted in the new cluster, behind the proxies' back: 2 deleted, 1 changed, 1 stray.
    let ids: Vec<String> = expected(&commands).into_keys().collect();
    let (deleted, changed) = (&ids[100..102], &ids[700]);
    let mut bulk = String::new();
    for id in deleted {
        bulk += &format!("{}\n", json!({"delete": {"_id": id}}));
    }
    let mut doc = expected(&commands)[changed].clone();
    doc["tags"][0]["value"] = json!("planted");
    bulk += &format!("{}\n{doc}\n", json!({"index": {"_id": changed}}));
    bulk += &format!(
        "{}\n{}\n",
        json!({"index": {"_id": "zz-stray"}}),
        json!({"tags": []})
    );
    bulk_ndjson(&stack.new_es, &new_index, &bulk).await;
    let (code, report) = verify(&legacy, &legacy_index, &new, &new_index);
    assert_eq!(code, 1, "{dialect:?}: {report}");
    let docs = &report["documents"];
    assert_eq!(
        docs["missing_in_new"],
        json!({"count": 2, "ids": deleted}),
        "{report}"
    );
    assert_eq!(
        docs["only_in_new"],
        json!({"count": 1, "ids": ["zz-stray"]}),
        "{report}"
    );
    assert_eq!(docs["differing_count"], 1, "{report}");
    assert_eq!(docs["differing"][0]["id"], json!(changed), "{report}");
    assert_eq!(docs["matching"], 1_500 - 3, "{report}");

    for proxy in [&legacy, &new] {
        assert_eq!(
            proxy.refusals(),
            Vec::<String>::new(),
            "{dialect:?}: a request its dialect refuses"
        );
    }
    println!(
        "RESULT {dialect:?}: backfill 1500 in 3 slices by {reading}, equal to the oracle; verify clean, then 2 missing, 1 stray, 1 differing found"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_and_verify_through_elasticsearch_8() {
    backfill_and_verify_through(Dialect::Elasticsearch8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_and_verify_from_elasticsearch_6_8() {
    backfill_and_verify_through(Dialect::Elasticsearch68).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_and_verify_through_opensearch_2() {
    backfill_and_verify_through(Dialect::OpenSearch2).await;
}

/// The live replay through `dialect` until caught up, against the oracle.
async fn run_through(dialect: Dialect) {
    let stack = stack();
    let proxy = speaking(&stack.new_es, dialect).await;
    let (topic, index) = (unique("dl-run"), unique("dl-run-index"));
    let messages = generated(1_500, 400, 37, 0);
    produce_topic(&stack, &topic, 3, &messages).await;
    let mut args = run_args_to(&stack, &topic, &unique("indexer"), &index, &proxy.url);
    args.push("--until-caught-up".into());
    let (code, _, stderr) = run_indexer(&args);
    assert_eq!(code, 0, "{dialect:?}: {}", tail(&stderr, 30));
    let records = read_topic(&stack, &topic);
    let oracle = oracle(&records, &HashSet::new(), Versions::Offset);
    assert_index_equals(&stack.new_es, &index, &oracle).await;
    assert_eq!(proxy.refusals(), Vec::<String>::new(), "{dialect:?}");
    println!(
        "RESULT {dialect:?}: run of 1500 commands caught up, {} documents equal the oracle",
        oracle.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn run_through_elasticsearch_8() {
    run_through(Dialect::Elasticsearch8).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_through_opensearch_2() {
    run_through(Dialect::OpenSearch2).await;
}

/// Elasticsearch 6.8 is a legacy cluster only: `run` writes the new cluster and refuses it at
/// start, naming the supported range, before reading a message.
#[tokio::test(flavor = "multi_thread")]
async fn run_refuses_elasticsearch_6_8_at_start() {
    let stack = stack();
    let proxy = speaking(&stack.new_es, Dialect::Elasticsearch68).await;
    let topic = unique("dl-six");
    produce_topic(&stack, &topic, 1, &generated(10, 5, 1, 0)).await;
    let args = run_args_to(
        &stack,
        &topic,
        &unique("indexer"),
        &unique("six"),
        &proxy.url,
    );
    let mut child = indexer().args(&args).stderr(Stdio::piped()).guarded();
    let err = read_in_background(child.0.stderr.take().unwrap());
    let status = wait_with_timeout(&mut child, Duration::from_secs(60));
    let err = err.join().unwrap();
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("Elasticsearch 6.8.23 is not supported as the new cluster")
            && err.contains("Elasticsearch 7.10 to 9.x or OpenSearch 1.x to 3.x"),
        "{err}"
    );
}

/// A scroll cannot be resumed after a restart: a killed backfill from Elasticsearch 6.8 (sliced
/// scroll, no point in time) reads each unfinished slice again from its start, and no finished
/// slice again, because a scroll slice holds the same documents every time.
#[tokio::test(flavor = "multi_thread")]
async fn a_killed_backfill_from_elasticsearch_6_8_restarts_only_its_unfinished_slices() {
    let stack = stack();
    let legacy = speaking(&stack.legacy_es, Dialect::Elasticsearch68).await;
    let new = speaking(&stack.new_es, Dialect::Elasticsearch8).await;
    let (legacy_index, new_index) = (unique("dl6-legacy"), unique("dl6-new"));
    let commands = corpus(6_000, 41);
    load_legacy(&stack.legacy_es, &legacy_index, &commands).await;
    create_new_index(&stack.new_es, &new_index).await;
    let dir = std::env::temp_dir().join(unique("dl6"));
    std::fs::create_dir_all(&dir).unwrap();
    let checkpoint = dir.join("checkpoint.json");
    let args = strings(&[
        "backfill",
        "--from-url",
        &legacy.url,
        "--from-index",
        &legacy_index,
        "--to-url",
        &new.url,
        "--to-index",
        &new_index,
        "--checkpoint",
        &checkpoint.display().to_string(),
        "--dead-letter-file",
        &dir.join("dead.ndjson").display().to_string(),
        "--json",
    ]);
    // Six slices, two at a time, slowly: slices finish in turns, so the kill lands mid-way.
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
    await_partial_backfill(&checkpoint);
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let at_kill: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    let finished_before: u64 = at_kill["slices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["done"] == true)
        .map(|s| s["read"].as_u64().unwrap())
        .sum();
    assert!(finished_before > 0 && finished_before < 6_000);

    let mut resume = args.clone();
    resume.extend(strings(&["--resume"]));
    resume.extend(strings(&slow));
    let (code, stdout, stderr) = run_indexer(&resume);
    assert_eq!(code, 0, "{}", tail(&stderr, 30));
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["ending"], "complete", "{summary}");
    for (before, now) in at_kill["slices"]
        .as_array()
        .unwrap()
        .iter()
        .zip(summary["slices"].as_array().unwrap())
    {
        if before["done"] == true {
            assert_eq!(now["read_this_run"], 0, "finished slice read again: {now}");
        }
    }
    assert_eq!(
        summary["read_this_run"].as_u64().unwrap(),
        6_000 - finished_before,
        "every unfinished slice is read from its start, and nothing else: {summary}"
    );
    assert_index_equals(&stack.new_es, &new_index, &expected(&commands)).await;
    for proxy in [&legacy, &new] {
        assert_eq!(proxy.refusals(), Vec::<String>::new());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
