//! What the end-to-end benchmarks share: the stack's addresses, the raw `_bulk` baseline and a
//! child's memory. Each example uses a part of it.
#![allow(dead_code)]

pub mod sink;

use std::time::{Duration, Instant};

use elasticsearch::http::headers::{HeaderMap, HeaderValue, CONTENT_TYPE};
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;
use futures::StreamExt;

/// A variable of the running stack, or a panic saying how to start it.
pub fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run `scripts/stack.sh up` and `eval \"$(scripts/stack.sh env)\"` first"))
}

/// Sends pre-built `_bulk` bodies to `index`, `in_flight` at a time, and returns how long that
/// took: the server's raw bulk capacity for exactly these writes, with no reading, decoding or
/// bookkeeping on the client side.
pub async fn raw_bulk(
    client: &Elasticsearch,
    index: &str,
    bodies: &[Vec<u8>],
    in_flight: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    // The indexer's own request line, so that the stand-in writes the same answers for both.
    let path = dual_indexer::sink::transport::bulk_path(index);
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(bodies)
        .map(|body| {
            let path = &path;
            async move {
                let mut headers = HeaderMap::new();
                headers.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-ndjson"),
                );
                let response = client
                    .send(
                        Method::Post,
                        path,
                        headers,
                        None::<&()>,
                        Some(body.as_slice()),
                        None,
                    )
                    .await?;
                anyhow::ensure!(
                    response.status_code().is_success(),
                    "raw bulk answered {}",
                    response.status_code()
                );
                Ok(())
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(started.elapsed())
}

/// A memory line of `/proc/<pid>/status` in MB: `VmRSS` (resident now) or `VmHWM` (the peak since
/// exec; `wait4`'s `ru_maxrss` would also count the moment between fork and exec, when the child
/// still maps the parent's memory). NaN once the process is gone.
pub fn proc_status_mb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| {
                    l.strip_prefix(field)
                        .is_some_and(|rest| rest.starts_with(':'))
                })?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One `--flag value` pair of an example's command line.
pub struct Flag {
    pub name: String,
    pub value: String,
}

impl Flag {
    /// The value as a number, or a panic that names the flag.
    pub fn number(&self) -> usize {
        self.value
            .parse()
            .unwrap_or_else(|_| panic!("{} takes a number, got `{}`", self.name, self.value))
    }
}

/// The command line as `--flag value` pairs: the examples take nothing else.
pub fn flags() -> Vec<Flag> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.chunks(2)
        .map(|pair| Flag {
            name: pair[0].clone(),
            value: pair.get(1).cloned().unwrap_or_default(),
        })
        .collect()
}

/// How long a plain rdkafka consumer, in a group of its own, takes to receive the `expected`
/// messages of `topic` from offset zero, touching each payload and doing nothing else: the
/// broker's own consume rate, the ceiling of any consumer. It is configured exactly as the
/// indexer's consumer is (`source::kafka::consumer_config`), and its time counts from its
/// creation, as the indexer's counts from its start.
pub fn bare_consume(brokers: &str, topic: &str, expected: usize) -> anyhow::Result<Duration> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let started = Instant::now();
    let mut base = rdkafka::ClientConfig::new();
    base.set("bootstrap.servers", brokers);
    let group = format!(
        "bench-bare-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let consumer: BaseConsumer =
        dual_indexer::source::kafka::consumer_config(&base, &group).create()?;
    consumer.subscribe(&[topic])?;
    let (mut received, mut bytes) = (0usize, 0usize);
    while received < expected {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the bare consumer received {received} of {expected} messages in 10 minutes"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            bytes += message?.payload().map_or(0, <[u8]>::len);
            received += 1;
        }
    }
    let took = started.elapsed();
    std::hint::black_box(bytes);
    Ok(took)
}
