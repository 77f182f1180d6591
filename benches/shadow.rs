//! The `shadow` proxy's overhead: the latency it adds (p50, p99) and the requests per second it
//! passes, against direct access to the same server, in one run.
//!
//! The upstream is an in-process HTTP server answering every request with a fixed 2 KB search
//! answer, so the figures are the proxy's own cost, not a cluster's; `SHADOW_BENCH_UPSTREAM=URL`
//! aims it at a real cluster instead (the stand-in of `scripts/stack.sh`, say), and the search
//! then goes to `SHADOW_BENCH_INDEX` (default `*`). The new cluster of the shadow samples is the
//! same server. Run with `cargo bench --bench shadow`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dual_indexer::shadow::{Proxy, ShadowSettings};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Sequential requests for the latency percentiles.
const SEQUENTIAL: usize = 3_000;
/// Concurrent clients, and for how long, for the throughput.
const CLIENTS: usize = 16;
const LOAD_FOR: Duration = Duration::from_secs(5);

fn answer() -> Bytes {
    let hits: Vec<serde_json::Value> = (0..10)
        .map(|i| serde_json::json!({"_index": "tags-v1", "_id": format!("doc-{i:06}"), "_score": 1.0,
            "_source": {"actions": {"tags": {"name": "dor", "env": "prod", "team": "payments"}}, "title": "CPU high on web-12", "status": "open"}}))
        .collect();
    let body = serde_json::json!({"took": 1, "timed_out": false, "hits": {"total": {"value": 10, "relation": "eq"}, "max_score": 1.0, "hits": hits}});
    Bytes::from(body.to_string())
}

/// Serves the fixed answer on a runtime of its own; returns its URL.
fn stub_upstream() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap()))
                .unwrap();
            let body = answer();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let _ = stream.set_nodelay(true);
                let body = body.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let mut reply = Response::new(Full::new(body.clone()));
                        reply
                            .headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        async move { Ok::<_, Infallible>(reply) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    rx.recv().unwrap()
}

/// Starts a proxy with `sample` on a runtime of its own; returns its URL.
fn proxy(upstream: &str, index: &str, sample: f64) -> String {
    let settings = ShadowSettings {
        legacy_url: upstream.to_owned(),
        legacy_index: index.to_owned(),
        new_url: upstream.to_owned(),
        new_index: "tags".into(),
        sample,
        concurrency: 8,
        timeout: Duration::from_secs(2),
        legacy_timeout: Duration::from_secs(60),
        report: std::env::temp_dir().join(format!(
            "shadow-bench-{}-{sample}.jsonl",
            std::process::id()
        )),
        answer_bytes: 4096,
        canary: None,
        security: Default::default(),
        tls: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let proxy = Arc::new(Proxy::new(&settings).unwrap());
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}", listener.local_addr().unwrap()))
                .unwrap();
            proxy.serve(listener, std::future::pending()).await;
        });
    });
    rx.recv().unwrap()
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    per_sec: f64,
}

async fn send(client: reqwest::Client, url: String, body: &'static str) {
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.bytes().await.unwrap();
}

async fn measure(client: &reqwest::Client, url: &str, body: &'static str) -> Figures {
    for _ in 0..200 {
        send(client.clone(), url.to_owned(), body).await;
    }
    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    for _ in 0..SEQUENTIAL {
        let started = Instant::now();
        send(client.clone(), url.to_owned(), body).await;
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1000.0;
    let deadline = Instant::now() + LOAD_FOR;
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    send(client.clone(), url.clone(), body).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await.unwrap();
    }
    Figures {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        per_sec: total as f64 / LOAD_FOR.as_secs_f64(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, and it should not take long there.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let upstream = std::env::var("SHADOW_BENCH_UPSTREAM").unwrap_or_else(|_| stub_upstream());
    let index = std::env::var("SHADOW_BENCH_INDEX").unwrap_or_else(|_| "*".into());
    let path = format!("/{index}/_search");
    let body: &'static str = r#"{"query": {"match": {"actions.tags.name": "dor"}}, "size": 10}"#;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder().tcp_nodelay(true).build().unwrap();
        let runs = [("direct", upstream.clone()), ("proxy, --sample 0", proxy(&upstream, &index, 0.0)), ("proxy, --sample 0.05", proxy(&upstream, &index, 0.05)), ("proxy, --sample 1", proxy(&upstream, &index, 1.0))];
        println!("{SEQUENTIAL} sequential searches for the latency, then {CLIENTS} clients for {}s for the rate; upstream {upstream}", LOAD_FOR.as_secs());
        println!("| path | p50 ms | p99 ms | added p50 ms | added p99 ms | requests/s | of direct |");
        println!("|---|---|---|---|---|---|---|");
        let mut direct: Option<Figures> = None;
        for (name, base) in runs {
            let f = measure(&client, &format!("{base}{path}"), body).await;
            let d = direct.get_or_insert(Figures { p50_ms: f.p50_ms, p99_ms: f.p99_ms, per_sec: f.per_sec });
            println!(
                "| {name} | {:.3} | {:.3} | {:+.3} | {:+.3} | {:.0} | {:.2}× |",
                f.p50_ms, f.p99_ms, f.p50_ms - d.p50_ms, f.p99_ms - d.p99_ms, f.per_sec, f.per_sec / d.per_sec
            );
        }
    });
}
