//! The end-to-end replay benchmark, measured against the local stack in one run.
//!
//! 1. Generates a seeded command stream (default: 40k commands over 20k ids, 10 tags each, no
//!    poison) and produces it to a fresh 3-partition topic.
//! 2. Measures the ES stand-in's raw bulk capacity: exactly the writes the indexer will send (read
//!    back from the topic, versions = partition offsets, each partition in offset order) as
//!    pre-built `_bulk` bodies of `--batch` documents, `--in-flight` requests at once, into a
//!    fresh index. It measures it again after step 3, and the ratio takes the mean of the two.
//! 3. Runs the release `dual-indexer run` binary against the topic into another fresh index, and
//!    times it until the group's committed offsets reach the high watermarks (polled every 100 ms
//!    by one client). Then it stops the indexer with SIGTERM and reads its CPU time from the
//!    kernel (`wait4`) and its peak RSS from `/proc`.
//! 4. Prints the ratio indexer/raw, CPU time per command and peak RSS.
//!
//! With `--backlog-rss-secs N` it skips the raw phase and instead lets the indexer work on the
//! whole backlog for N seconds, then reports its peak RSS and how far it got: run it with a 20k
//! and a 200k backlog to see that memory follows the in-flight budget, not the backlog.
//!
//! ```text
//! scripts/stack.sh up && eval "$(scripts/stack.sh env)"
//! cargo build --release --bin dual-indexer
//! cargo run --release --example e2e_bench -- --count 40000 --ids 20000
//! ```

mod bench_support;

use std::process::Command;
use std::time::{Duration, Instant};

use dual_indexer::envelope::{Plan, Record};
use dual_indexer::es;
use dual_indexer::generate::{self, GeneratorSpec};
use dual_indexer::sink::{Batch, Provenance};
use dual_indexer::source::group;
use dual_indexer::source::offsets::Ticket;
use dual_indexer::transform::Schema;
use elasticsearch::http::Method;
use rdkafka::consumer::BaseConsumer;
use rdkafka::ClientConfig;

struct Options {
    count: usize,
    ids: usize,
    tags: usize,
    batch: usize,
    in_flight: usize,
    indexer: String,
    backlog_rss_secs: Option<u64>,
}

fn options() -> Options {
    let mut o = Options {
        count: 40_000,
        ids: 20_000,
        tags: 10,
        batch: 1_000,
        in_flight: 4,
        indexer: "target/release/dual-indexer".into(),
        backlog_rss_secs: None,
    };
    for flag in bench_support::flags() {
        match flag.name.as_str() {
            "--count" => o.count = flag.number(),
            "--ids" => o.ids = flag.number(),
            "--tags" => o.tags = flag.number(),
            "--batch" => o.batch = flag.number(),
            "--in-flight" => o.in_flight = flag.number(),
            "--indexer" => o.indexer = flag.value.clone(),
            "--backlog-rss-secs" => o.backlog_rss_secs = Some(flag.number() as u64),
            other => panic!("unknown option {other}; accepted: --count --ids --tags --batch --in-flight --indexer --backlog-rss-secs"),
        }
    }
    o
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = &options();
    let brokers = bench_support::env("KAFKA_BROKERS");
    let es_url = bench_support::env("NEW_ES_URL");
    let run = std::process::id();
    let topic = format!("bench-{run}");
    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", &brokers);

    let messages = generate::messages(&GeneratorSpec {
        count: o.count,
        ids: o.ids,
        tags: o.tags,
        seed: 7,
        poison_every: 0,
    });
    dual_indexer::source::topics::ensure_topic(&kafka, &topic, 3).await?;
    generate::produce(&kafka, &topic, &messages).await?;
    eprintln!("produced {} commands to {topic}", messages.len());

    let client = es::client(&es_url, Duration::from_secs(120))?;
    if let Some(secs) = o.backlog_rss_secs {
        return backlog_rss(o, &brokers, &es_url, &topic, &kafka, secs).await;
    }
    let raw_index = format!("bench-raw-{run}");
    // The raw baseline sends exactly the writes the indexer sends (same ids, same versions: the
    // real partition offsets), each partition in offset order, as a consumer's fetches deliver
    // them. Interleaving the partitions message by message is the stand-in's slow case (at 40k
    // commands it fell to a fifth of the rate), and would flatter the indexer.
    let mut records =
        dual_indexer::source::topics::read_all(&kafka, &topic, Duration::from_secs(120))?;
    records.sort_by_key(|r| (r.partition, r.offset));
    let plan = Plan::builtin(Default::default());
    let bodies: Vec<Vec<u8>> = records
        .chunks(o.batch)
        .map(|chunk| {
            let mut batch = Batch::with_capacity(1 << 20, chunk.len());
            for r in chunk {
                let record = Record::new(&r.payload, r.key.as_deref(), r.offset);
                let write = plan
                    .prepare(Schema::New, &record)
                    .expect("no poison in the bench stream");
                let ticket = Ticket {
                    partition: r.partition,
                    offset: r.offset,
                    epoch: 0,
                };
                batch.push(
                    write,
                    Provenance {
                        ticket,
                        key: None,
                        payload: &[],
                    },
                );
            }
            batch.body().to_vec()
        })
        .collect();
    // The stand-in slows as it accumulates versions, so the baseline is measured before and after
    // the indexer (A-B-A) and the ratio is taken against their mean: neither side gets the
    // fresher server.
    let raw_before = raw_rate(&client, &raw_index, &bodies, o).await?;

    let index = format!("bench-indexer-{run}");
    let group_id = format!("bench-{run}");
    let started = Instant::now();
    let child = spawn_indexer(o, &brokers, &es_url, &topic, &group_id, &index)?;
    let pid = child.id() as libc::pid_t;
    // The first commit comes after start-up (connecting, joining the group, the first fetch) and
    // the first bulk requests; the steady rate counts from there.
    let mut first_commit: Option<(f64, i64)> = None;
    // One long-lived client polls the group's commits: a new client per sample (as
    // `group::positions` makes) would load the broker the indexer reads from, which the raw
    // phases do not have to share.
    let watcher = CommitWatcher::new(&kafka, &group_id, &topic)?;
    loop {
        let committed = tokio::task::block_in_place(|| watcher.committed())?;
        if first_commit.is_none() && committed > 0 {
            first_commit = Some((started.elapsed().as_secs_f64(), committed));
        }
        if committed == watcher.high {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let indexer_secs = started.elapsed().as_secs_f64();
    let (startup_secs, at_first) = first_commit.unwrap_or((0.0, 0));
    let steady_rate = (o.count as i64 - at_first) as f64 / (indexer_secs - startup_secs).max(1e-3);
    let peak = bench_support::proc_status_mb(pid as u32, "VmHWM");
    let (status, usage) = stop(pid);
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the indexer did not exit cleanly: {status}"
    );
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu_secs = cpu(usage.ru_utime) + cpu(usage.ru_stime);
    let indexer_rate = o.count as f64 / indexer_secs;
    let documents = es::count(&client, &index).await?;
    es::request(&client, Method::Delete, &format!("/{index}"), None).await?;
    let raw_after = raw_rate(&client, &format!("{raw_index}-after"), &bodies, o).await?;
    let raw_rate = (raw_before + raw_after) / 2.0;

    println!("commands                 {}", o.count);
    println!("documents in the index   {documents}");
    println!(
        "raw bulk capacity        {raw_rate:.0} docs/s (mean of {raw_before:.0} before and {raw_after:.0} after the indexer)"
    );
    println!("dual-indexer             {indexer_rate:.0} commands/s");
    println!("ratio                    {:.2}x", indexer_rate / raw_rate);
    println!(
        "first commit after       {startup_secs:.1} s (start-up, group join, first bulk requests)"
    );
    println!(
        "steady rate from then    {steady_rate:.0} commands/s ({:.2}x raw)",
        steady_rate / raw_rate
    );
    println!(
        "indexer CPU              {cpu_secs:.2} s ({:.1} us/command)",
        cpu_secs * 1e6 / o.count as f64
    );
    println!("indexer peak RSS         {peak:.1} MB");
    Ok(())
}

/// Sends the pre-built bodies into a fresh `index`, deletes it, and returns the docs/s.
async fn raw_rate(
    client: &elasticsearch::Elasticsearch,
    index: &str,
    bodies: &[Vec<u8>],
    o: &Options,
) -> anyhow::Result<f64> {
    es::ensure_index(client, index, es::NEW_INDEX_TEMPLATE).await?;
    let secs = bench_support::raw_bulk(client, index, bodies, o.in_flight)
        .await?
        .as_secs_f64();
    es::request(client, Method::Delete, &format!("/{index}"), None).await?;
    let rate = o.count as f64 / secs;
    eprintln!("raw bulk capacity: {rate:.0} docs/s ({secs:.2}s)");
    Ok(rate)
}

/// Starts the indexer on the whole backlog, lets it run for `secs`, stops it, and reports its
/// peak RSS and progress: memory must depend on the in-flight budget, not on the backlog.
async fn backlog_rss(
    o: &Options,
    brokers: &str,
    es_url: &str,
    topic: &str,
    kafka: &ClientConfig,
    secs: u64,
) -> anyhow::Result<()> {
    let run = std::process::id();
    let (index, group_id) = (format!("bench-rss-{run}"), format!("bench-rss-{run}"));
    let child = spawn_indexer(o, brokers, es_url, topic, &group_id, &index)?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let peak = bench_support::proc_status_mb(child.id(), "VmHWM");
    let (status, _) = stop(child.id() as libc::pid_t);
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the indexer did not exit cleanly: {status}"
    );
    let positions = group::positions(kafka, &group_id, topic)?;
    let committed: i64 = positions.iter().map(|p| p.committed.unwrap_or(0)).sum();
    println!("backlog                  {} commands", o.count);
    println!("replayed in {secs} s         {committed} commands");
    println!("indexer peak RSS         {peak:.1} MB");
    let client = es::client(es_url, Duration::from_secs(120))?;
    es::request(&client, Method::Delete, &format!("/{index}"), None).await?;
    Ok(())
}

/// Starts the release indexer on `topic` with the benchmark's batch size and concurrency, plus
/// any arguments in `E2E_EXTRA_ARGS`.
fn spawn_indexer(
    o: &Options,
    brokers: &str,
    es_url: &str,
    topic: &str,
    group: &str,
    index: &str,
) -> std::io::Result<std::process::Child> {
    Command::new(&o.indexer)
        .args([
            "run",
            "--brokers",
            brokers,
            "--topic",
            topic,
            "--group",
            group,
            "--es-url",
            es_url,
        ])
        .args([
            "--index",
            index,
            "--create-index",
            "--batch-max-docs",
            &o.batch.to_string(),
        ])
        .args([
            "--max-in-flight",
            &o.in_flight.to_string(),
            "--log-level",
            "warn",
        ])
        .args(
            std::env::var("E2E_EXTRA_ARGS")
                .unwrap_or_default()
                .split_whitespace(),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
}

/// The group's committed offsets, summed over the partitions, read by one client for the whole
/// run; the topic's high watermarks are fixed once the stream has been produced.
struct CommitWatcher {
    client: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
    high: i64,
}

impl CommitWatcher {
    fn new(kafka: &ClientConfig, group_id: &str, topic: &str) -> anyhow::Result<Self> {
        let positions = group::positions(kafka, group_id, topic)?;
        Ok(Self {
            client: group::offsets_client(kafka, group_id)?,
            topic: topic.to_owned(),
            partitions: positions.iter().map(|p| p.partition).collect(),
            high: positions.iter().map(|p| p.high).sum(),
        })
    }

    fn committed(&self) -> anyhow::Result<i64> {
        let committed = group::committed(&self.client, &self.topic, &self.partitions)?;
        Ok(committed.values().flatten().sum())
    }
}

/// SIGTERM, then reap the child and return its wait status and resource usage.
fn stop(pid: libc::pid_t) -> (i32, libc::rusage) {
    // SAFETY: plain syscalls on the pid of a child this process spawned and has not yet reaped.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::wait4(pid, &mut status, 0, &mut usage);
        (status, usage)
    }
}
