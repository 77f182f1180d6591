//! Credentials on the wire, and nowhere else: the binary is pointed at a loopback HTTP listener
//! that records the request head and answers 401 the way a secured Elasticsearch does. The test
//! checks the `Authorization` header that was sent, and that the secret appears in none of the
//! process's output.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use support::indexer;

/// Answers every request on a loopback port with a 401, and sends each request head to the
/// returned channel.
fn refusing_cluster() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = r#"{"error":{"type":"security_exception","reason":"unable to authenticate user"},"status":401}"#;
            let reply = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes());
            if tx
                .send(String::from_utf8_lossy(&head).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    (port, rx)
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs `index show` against the refusing cluster with `env`, and returns the exit code, all the
/// output, and the `authorization` header of the first request.
fn show_index(
    url: &str,
    env: &[(&str, &str)],
    rx: &mpsc::Receiver<String>,
) -> (i32, String, String) {
    let output = indexer()
        .args([
            "index",
            "show",
            "--es-url",
            url,
            "--index",
            "tags-v2",
            "--log-level",
            "debug",
        ])
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let head = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a request arrived");
    let authorization = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("authorization")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), all, authorization)
}

#[test]
fn basic_credentials_from_the_environment_are_sent_and_never_shown() {
    let (port, rx) = refusing_cluster();
    let secret = "S3cr3t-pa55-basic";
    let (code, output, authorization) = show_index(
        &format!("http://127.0.0.1:{port}"),
        &[
            ("DUAL_INDEXER_ES_USERNAME", "new-user"),
            ("DUAL_INDEXER_ES_PASSWORD", secret),
        ],
        &rx,
    );
    assert_eq!(code, 2, "{output}");
    assert_eq!(
        authorization,
        format!("Basic {}", base64(format!("new-user:{secret}").as_bytes()))
    );
    assert!(
        output.contains("HTTP 401"),
        "the refusal is reported: {output}"
    );
    assert!(!output.contains(secret), "the secret leaked: {output}");
}

#[test]
fn an_api_key_from_a_file_is_sent_and_never_shown() {
    let (port, rx) = refusing_cluster();
    let key = "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw==";
    let path = std::env::temp_dir().join(format!("api-key-{}", std::process::id()));
    std::fs::write(&path, format!("{key}\n")).unwrap();
    let (code, output, authorization) = show_index(
        &format!("http://127.0.0.1:{port}"),
        &[("DUAL_INDEXER_ES_API_KEY_FILE", path.to_str().unwrap())],
        &rx,
    );
    std::fs::remove_file(&path).unwrap();
    assert_eq!(code, 2, "{output}");
    assert_eq!(authorization, format!("ApiKey {key}"));
    assert!(!output.contains(key), "the key leaked: {output}");
}

#[test]
fn credentials_in_the_url_are_sent_as_basic_auth_and_never_shown() {
    let (port, rx) = refusing_cluster();
    let (code, output, authorization) = show_index(
        &format!("http://url-user:S3cr3t%40url@127.0.0.1:{port}"),
        &[],
        &rx,
    );
    assert_eq!(code, 2, "{output}");
    assert_eq!(
        authorization,
        format!("Basic {}", base64(b"url-user:S3cr3t@url"))
    );
    assert!(!output.contains("S3cr3t"), "the password leaked: {output}");
}

#[test]
fn half_configured_credentials_are_refused_naming_the_setting() {
    let output = indexer()
        .args([
            "index",
            "show",
            "--es-url",
            "http://127.0.0.1:9",
            "--index",
            "x",
        ])
        .env("DUAL_INDEXER_ES_USERNAME", "someone")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("--es-username is set but no password: set DUAL_INDEXER_ES_PASSWORD or DUAL_INDEXER_ES_PASSWORD_FILE"),
        "{err}"
    );
}

#[test]
fn base64_encodes_like_rfc_4648() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}
