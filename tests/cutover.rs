//! Versioned indices, atomic alias swaps, the cutover gate and rollback, against the real broker
//! and ES stand-in.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dual_indexer::generate::{self, GeneratorSpec};
use serde_json::{json, Value};
use support::*;

/// Runs the indexer binary to completion: (exit code, stdout).
fn admin(args: &[&str]) -> (i32, String) {
    let output = indexer().args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8(output.stdout).unwrap(),
    )
}

/// The raw `GET /_alias/<alias>` answer: the exact state a rollback must restore.
fn alias_state(es: &str, alias: &str) -> Value {
    let reply = http_get_json(&format!("{es}/_alias/{alias}"));
    if reply.get("status") == Some(&json!(404)) {
        Value::Null
    } else {
        reply
    }
}

/// GET a JSON document from the ES stand-in (any answer, including errors).
fn http_get_json(url: &str) -> Value {
    let url: url::Url = url.parse().unwrap();
    let (_, body) = get(url.port().unwrap(), &url[url::Position::BeforePath..])
        .unwrap_or_else(|| panic!("no JSON answer from {url}"));
    body
}

async fn es_call(es: &str, method: &str, path: &str, body: Value) -> Value {
    let client = dual_indexer::es::client(es, Duration::from_secs(30)).unwrap();
    let method = match method {
        "PUT" => elasticsearch::http::Method::Put,
        "POST" => elasticsearch::http::Method::Post,
        _ => elasticsearch::http::Method::Get,
    };
    let (status, reply) = dual_indexer::es::request(&client, method, path, Some(&body))
        .await
        .unwrap();
    assert!((200..300).contains(&status), "{path}: {status} {reply}");
    reply
}

#[tokio::test(flavor = "multi_thread")]
async fn alias_swap_is_atomic_and_rollback_restores_the_previous_state_exactly() {
    let stack = stack();
    let es = stack.new_es.as_str();
    let prefix = unique("swap");
    for _ in 0..2 {
        let (code, out) = admin(&["index", "create", "--es-url", es, "--prefix", &prefix]);
        assert_eq!(code, 0, "{out}");
    }
    let (first, second) = (format!("{prefix}-000001"), format!("{prefix}-000002"));
    // The write alias moved to the newest generation; the read alias stayed on the first.
    assert_eq!(
        alias_state(es, &prefix),
        json!({&second: {"aliases": {&prefix: {"is_write_index": true}}}})
    );
    let read_alias = format!("{prefix}-read");
    assert_eq!(
        alias_state(es, &read_alias),
        json!({&first: {"aliases": {&read_alias: {}}}})
    );

    // A user-facing alias with a filter, held by the first generation.
    let alias = format!("{prefix}-users");
    es_call(
        es,
        "POST",
        "/_aliases",
        json!({"actions": [
            {"add": {"index": &first, "alias": &alias, "filter": {"term": {"status": "open"}}}}
        ]}),
    )
    .await;
    let before = alias_state(es, &alias);

    // While swaps go back and forth, a reader must never see the alias on no index or on two.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, url, alias) = (Arc::clone(&stop), es.to_owned(), alias.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let state = alias_state(&url, &alias);
                seen.push(state.as_object().map_or(0, |o| o.len()));
            }
            seen
        })
    };
    let record = std::env::temp_dir().join(format!("{prefix}-record.json"));
    let record = record.to_str().unwrap();
    for round in 0..10 {
        let to = if round % 2 == 0 { &second } else { &first };
        let (code, out) = admin(&[
            "alias", "swap", "--es-url", es, "--alias", &alias, "--to", to, "--record", record,
        ]);
        assert_eq!(code, 0, "{out}");
        let from = if round % 2 == 0 { &first } else { &second };
        assert!(
            out.contains(&format!("alias {alias}: {from} → {to}")),
            "{out}"
        );
    }
    stop.store(true, Ordering::SeqCst);
    let seen = reader.join().unwrap();
    assert!(
        seen.len() > 10,
        "the reader barely ran: {} reads",
        seen.len()
    );
    assert!(
        seen.iter().all(|&holders| holders == 1),
        "a reader saw the alias on {:?} indices during the swaps",
        seen.iter().filter(|&&h| h != 1).collect::<Vec<_>>()
    );

    // The last swap went to the first generation; swap once more to the second, keeping the
    // filter, then roll back to exactly the state before it.
    let (code, out) = admin(&[
        "alias", "swap", "--es-url", es, "--alias", &alias, "--to", &second, "--record", record,
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        alias_state(es, &alias),
        json!({&second: {"aliases": {&alias: {"filter": {"term": {"status": "open"}}}}}})
    );
    let (code, out) = admin(&["rollback", "--es-url", es, "--record", record]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(alias_state(es, &alias), before, "{out}");

    // The alias moved by someone else after a swap: rollback refuses rather than undo their change.
    let (code, _) = admin(&[
        "alias", "swap", "--es-url", es, "--alias", &alias, "--to", &second, "--record", record,
    ]);
    assert_eq!(code, 0);
    es_call(
        es,
        "POST",
        "/_aliases",
        json!({"actions": [{"add": {"index": &first, "alias": &alias}}]}),
    )
    .await;
    let moved = alias_state(es, &alias);
    let (code, _) = admin(&["rollback", "--es-url", es, "--record", record]);
    assert_eq!(
        code, 2,
        "rollback must refuse when the alias moved since the swap"
    );
    assert_eq!(
        alias_state(es, &alias),
        moved,
        "a refused rollback changes nothing"
    );
    let (code, _) = admin(&["rollback", "--es-url", es, "--record", record, "--force"]);
    assert_eq!(code, 0);
    assert_eq!(alias_state(es, &alias), before);
    let _ = std::fs::remove_file(record);
}

#[tokio::test(flavor = "multi_thread")]
async fn cutover_waits_for_the_gate_restores_bulk_load_settings_and_rolls_back() {
    let stack = stack();
    let es = stack.new_es.as_str();
    let (topic, prefix, port) = (unique("cutover"), unique("cut"), free_port());
    let index = format!("{prefix}-000001");
    let (code, out) = admin(&[
        "index",
        "create",
        "--es-url",
        es,
        "--prefix",
        &prefix,
        "--bulk-load",
        "--replicas",
        "2",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("refresh_interval -1, replicas 0 — BULK-LOAD"),
        "{out}"
    );

    let messages = generate::messages(&GeneratorSpec {
        count: 1_000,
        ids: 300,
        seed: 5,
        ..GeneratorSpec::default()
    });
    produce_topic(&stack, &topic, 3, &messages).await;
    let group = unique("indexer");
    let mut args = run_args(&stack, &topic, &group, &prefix);
    args.retain(|a| a != "--create-index");
    let mut child = indexer()
        .args(&args)
        .args(["--status-addr", &format!("127.0.0.1:{port}")])
        .guarded();
    wait_for("/readyz to turn 200", Duration::from_secs(180), || {
        (get(port, "/readyz")?.0 == 200).then_some(())
    });
    // The bulk-load settings are visible in /status and in `lag`.
    let status = wait_for(
        "/status to show the index settings",
        Duration::from_secs(30),
        || {
            let (_, status) = get(port, "/status")?;
            let shown = status["index"].as_array().is_some_and(|a| !a.is_empty());
            shown.then_some(status)
        },
    );
    assert_eq!(status["index"][0]["index"], json!(index), "{status}");
    assert_eq!(status["index"][0]["bulk_load"], json!(true), "{status}");
    let (code, out) = admin(&[
        "lag",
        "--brokers",
        &stack.brokers,
        "--group",
        &group,
        "--topic",
        &topic,
        "--interval-secs",
        "1",
        "--window-secs",
        "1",
        "--es-url",
        es,
        "--index",
        &prefix,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "index {index}: refresh_interval -1, replicas 0 — BULK-LOAD"
        )),
        "{out}"
    );

    let alias = format!("{prefix}-users");
    let report = std::env::temp_dir().join(format!("{prefix}-verify.json"));
    let record = std::env::temp_dir().join(format!("{prefix}-record.json"));
    let cutover = |extra: &[&str]| {
        let mut args = vec![
            "cutover",
            "--es-url",
            es,
            "--brokers",
            &stack.brokers,
            "--group",
            &group,
            "--topic",
            &topic,
            "--alias",
            &alias,
            "--to",
            &prefix,
            "--interval-secs",
            "1",
            "--window-secs",
            "2",
            "--verify-report",
            report.to_str().unwrap(),
            "--record",
            record.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        admin(&args)
    };

    // No verify report yet: refused, and nothing changed.
    let (code, out) = cutover(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no usable verify report"), "{out}");
    assert_eq!(alias_state(es, &alias), Value::Null);

    // A report with differences: refused.
    let write_report = |clean: bool| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(
            &report,
            json!({"clean": clean, "finished_at": now, "new": {"indices": [&index]}}).to_string(),
        )
        .unwrap();
    };
    write_report(false);
    let (code, out) = cutover(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("found differences"), "{out}");
    assert_eq!(alias_state(es, &alias), Value::Null);

    // With the shadow gate: a recent `different` answer in the proxy's report refuses.
    write_report(true);
    let shadow = std::env::temp_dir().join(format!("{prefix}-shadow.jsonl"));
    let write_shadow = |classes: &[&str]| {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let lines: Vec<String> = classes
            .iter()
            .map(|class| {
                json!({"at_ms": now_ms, "endpoint": "_search", "path": "/tags/_search", "class": class,
                    "differences": [], "legacy_ms": 1.0, "query": "{}"})
                .to_string()
            })
            .collect();
        std::fs::write(&shadow, lines.join("\n") + "\n").unwrap();
    };
    let shadow_gate = [
        "--shadow-report",
        shadow.to_str().unwrap(),
        "--min-shadow-compared",
        "3",
    ];
    write_shadow(&["equal", "analysis", "different", "untranslatable"]);
    let (code, out) = cutover(&shadow_gate);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("1 `different` answers in the last 3600s"),
        "{out}"
    );
    assert_eq!(alias_state(es, &alias), Value::Null);

    // A clean report, a clean shadow report and a caught-up replay: the gate holds, settings come
    // back, the alias moves.
    write_shadow(&["equal", "analysis", "equal", "error"]);
    let (code, out) = cutover(&shadow_gate);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("bulk-load settings restored"), "{out}");
    assert!(
        out.contains(&format!("alias {alias}: (none) → {index}")),
        "{out}"
    );
    assert_eq!(
        alias_state(es, &alias),
        json!({&index: {"aliases": {&alias: {}}}})
    );
    let settings = http_get_json(&format!("{es}/{index}/_settings"));
    let settings = &settings[&index]["settings"]["index"];
    assert_eq!(settings["number_of_replicas"], json!("2"), "{settings}");
    assert_ne!(settings["refresh_interval"], json!("-1"), "{settings}");

    // Rollback restores "no alias", exactly as before.
    let (code, out) = admin(&[
        "rollback",
        "--es-url",
        es,
        "--record",
        record.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(alias_state(es, &alias), Value::Null);

    // A forced cutover goes ahead despite a dirty report, and says so.
    write_report(false);
    let (code, out) = cutover(&["--force"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("(FORCED)"), "{out}");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(written["forced"], json!(true));
    assert!(written["overridden"][0]
        .as_str()
        .unwrap()
        .contains("found differences"));

    terminate(&child);
    assert!(wait_with_timeout(&mut child, Duration::from_secs(60)).success());
    let _ = std::fs::remove_file(report);
    let _ = std::fs::remove_file(record);
    let _ = std::fs::remove_file(shadow);
}
