//! `config check` and `--config` against the real broker and ES stand-ins: sources are shown,
//! secrets are not, every problem is named, and a bad file is refused with its key.

mod support;

use std::process::Stdio;

use support::*;

fn config_check(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = indexer()
        .args(["config", "check"])
        .args(args)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

fn scratch_file(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("{}.toml", unique(name)));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_configuration_passes_and_shows_where_each_setting_came_from() {
    let stack = stack();
    let topic = unique("config-topic");
    produce_topic(&stack, &topic, 2, &[]).await;
    let file = scratch_file(
        "config",
        &format!(
            "es_url = \"{}\"\nindex = \"{}\"\n[kafka]\n\"sasl.password\" = \"file-secret-9\"\n\"security.protocol\" = \"PLAINTEXT\"\n",
            stack.new_es,
            unique("tags-v2")
        ),
    );
    let (code, out) = config_check(
        &[
            "--config",
            file.to_str().unwrap(),
            "--brokers",
            &stack.brokers,
            "--create-index",
            "--legacy-es-url",
            &stack.legacy_es,
            "--legacy-index",
            "no-such-legacy-index",
        ],
        &[
            ("DUAL_INDEXER_TOPIC", topic.as_str()),
            ("DUAL_INDEXER_KAFKA_SSL_KEY_PASSWORD", "env-secret-7"),
        ],
    );
    std::fs::remove_file(&file).unwrap();
    // Only the legacy index is missing.
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ok    broker"), "{out}");
    assert!(
        out.contains(&format!(
            "ok    topic            `{topic}` exists (2 partitions)"
        )),
        "{out}"
    );
    assert!(out.contains("ok    new cluster"), "{out}");
    assert!(
        out.contains("is missing; --create-index will create it"),
        "{out}"
    );
    assert!(out.contains("ok    legacy cluster"), "{out}");
    assert!(
        out.contains("FAIL  index            `no-such-legacy-index` does not exist"),
        "{out}"
    );
    assert!(out.contains("1 check(s) failed"), "{out}");
    let line = |key: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no line for {key}: {out}"))
            .to_owned()
    };
    assert!(line("brokers").ends_with("flag"), "{out}");
    assert!(line("topic").ends_with("env DUAL_INDEXER_TOPIC"), "{out}");
    assert!(line("es_url").contains("file "), "{out}");
    assert!(line("linger_ms").ends_with("default"), "{out}");
    assert!(line("kafka").contains("sasl.password=<redacted>"), "{out}");
    assert!(
        !out.contains("file-secret-9") && !out.contains("env-secret-7"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_problem_is_named() {
    let stack = stack();
    let closed = free_port();
    let (code, out) = config_check(
        &[
            "--brokers",
            &stack.brokers,
            "--topic",
            &unique("missing-topic"),
            "--group",
            "same",
            "--legacy-group",
            "same",
            "--es-url",
            &format!("http://127.0.0.1:{closed}"),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  settings"), "{out}");
    assert!(out.contains("legacy"), "{out}");
    assert!(
        out.contains("FAIL  topic") && out.contains("does not exist"),
        "{out}"
    );
    assert!(
        out.contains("FAIL  new cluster") && out.contains("is not reachable"),
        "{out}"
    );

    let (code, out) = config_check(
        &[
            "--brokers",
            &stack.brokers,
            "--es-url",
            &stack.new_es,
            "--index",
            &unique("absent"),
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "does not exist (create it with `dual-indexer index create`, or pass --create-index)"
        ),
        "{out}"
    );
}

#[test]
fn a_bad_file_is_refused_with_the_key_and_what_is_accepted() {
    let file = scratch_file("bad-config", "[backfill]\nslcies = 4\n");
    let output = indexer()
        .args(["backfill", "--config", file.to_str().unwrap()])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    std::fs::remove_file(&file).unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("unknown setting `slcies` in [backfill] (did you mean `slices`?); accepted:"),
        "{err}"
    );
    let missing = indexer()
        .args(["run", "--config", "/no/such/dual-indexer.toml"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("--config /no/such/dual-indexer.toml"), "{err}");
}

#[test]
fn kafka_tls_and_scram_settings_are_built_and_a_bad_ca_or_a_plaintext_broker_fails() {
    let stack = stack();
    let garbage = scratch_file("not-a-ca", "this is not a certificate");
    let sasl = [
        "--brokers",
        &stack.brokers,
        "--es-url",
        &stack.new_es,
        "--kafka",
        "security.protocol=SASL_SSL",
        "--kafka",
        "sasl.mechanisms=SCRAM-SHA-512",
        "--kafka",
        "sasl.username=dual-indexer",
    ];
    let env = [("DUAL_INDEXER_KAFKA_SASL_PASSWORD", "kafka-secret-31")];
    let ca = format!("ssl.ca.location={}", garbage.display());
    let mut args = sasl.to_vec();
    args.extend(["--kafka", &ca]);
    let (code, out) = config_check(&args, &env);
    std::fs::remove_file(&garbage).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  broker") && out.contains("ssl.ca.location failed"),
        "a CA file without a certificate is refused: {out}"
    );
    assert!(!out.contains("kafka-secret-31"), "{out}");

    // TLS is compiled in and never falls back to plaintext: the stand-in broker speaks plaintext
    // only, so a TLS client cannot reach it.
    let (code, out) = config_check(&sasl, &env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  broker"), "{out}");
    assert!(!out.contains("not supported in this build"), "{out}");
    assert!(!out.contains("kafka-secret-31"), "{out}");
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let output = indexer()
        .args(["run"])
        .env("DUAL_INDEXER_BATCH_MAX_DOCS", "many")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("DUAL_INDEXER_BATCH_MAX_DOCS: invalid value 'many' for '--batch-max-docs"),
        "{err}"
    );
    let output = indexer()
        .args(["run"])
        .env("DUAL_INDEXER_SCHEMA", "old")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("DUAL_INDEXER_SCHEMA: invalid value 'old'")
            && err.contains("accepted: new, legacy"),
        "{err}"
    );
}
