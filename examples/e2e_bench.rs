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
//! 4. Checks that the index holds exactly the documents the tests' oracle computes from the
//!    topic (`tests/support`), then prints the ratio indexer/raw, CPU time per command and peak
//!    RSS.
//!
//! `--mode memory` skips the raw phase: the indexer replays the whole backlog, its end state is
//! checked, and it reports its peak RSS. Run it with a 20k and a 200k backlog to see that memory
//! follows the in-flight budget, not the backlog.
//!
//! `--mode ceiling` measures the indexer's own ceiling, with no Elasticsearch to wait for: it
//! writes into the bench sink (`bench_support/sink.rs`, `_bulk` answered at memory speed), and
//! its rate is set against a bare rdkafka consumer of the same topic, measured before and after
//! it in the same run. The sink must have answered every command exactly once.
//!
//! ```text
//! scripts/stack.sh up && eval "$(scripts/stack.sh env)"
//! cargo build --release --bin dual-indexer
//! cargo run --release --example e2e_bench -- --count 40000 --ids 20000
//! cargo run --release --example e2e_bench -- --mode ceiling --count 200000 --ids 50000
//! ```

mod bench_support;
#[path = "../tests/support/oracle.rs"]
mod support;

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

/// What a run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The indexer against the stand-in's raw bulk capacity for the same writes.
    Ratio,
    /// The indexer's peak memory through the whole backlog, and nothing else.
    Memory,
    /// The indexer into the bench sink against a bare consumer of the same topic.
    Ceiling,
}

struct Options {
    count: usize,
    ids: usize,
    tags: usize,
    batch: usize,
    in_flight: usize,
    indexer: String,
    mode: Mode,
}

fn options() -> Options {
    let mut o = Options {
        count: 40_000,
        ids: 20_000,
        tags: 10,
        batch: 1_000,
        in_flight: 4,
        indexer: "target/release/dual-indexer".into(),
        mode: Mode::Ratio,
    };
    for flag in bench_support::flags() {
        match flag.name.as_str() {
            "--count" => o.count = flag.number(),
            "--ids" => o.ids = flag.number(),
            "--tags" => o.tags = flag.number(),
            "--batch" => o.batch = flag.number(),
            "--in-flight" => o.in_flight = flag.number(),
            "--indexer" => o.indexer = flag.value.clone(),
            "--mode" => {
                o.mode = match flag.value.as_str() {
                    "ratio" => Mode::Ratio,
                    "memory" => Mode::Memory,
                    "ceiling" => Mode::Ceiling,
                    other => panic!("--mode takes ratio, memory or ceiling, got `{other}`"),
                }
            }
            other => panic!("unknown option {other}; accepted: --count --ids --tags --batch --in-flight --indexer --mode"),
        }
    }
    o
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = &options();
    let brokers = bench_support::env("KAFKA_BROKERS");
    let es_url = bench_support::env("NEW_ES_URL");
    let topic = format!("bench-{}", std::process::id());
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
    println!("commands                 {}", o.count);
    let run = Run {
        options: o,
        brokers: &brokers,
        es_url: &es_url,
        topic: &topic,
        kafka: &kafka,
    };
    match o.mode {
        Mode::Ratio => ratio(&run).await,
        Mode::Memory => memory(&run).await,
        Mode::Ceiling => ceiling(&run).await,
    }
}

/// What every mode works with: the options, the stack and the produced topic.
struct Run<'a> {
    options: &'a Options,
    brokers: &'a str,
    es_url: &'a str,
    topic: &'a str,
    kafka: &'a ClientConfig,
}

/// The indexer against the stand-in's raw bulk capacity for exactly its writes, then the index
/// against the oracle.
async fn ratio(run: &Run<'_>) -> anyhow::Result<()> {
    let (o, brokers, es_url, topic, kafka) =
        (run.options, run.brokers, run.es_url, run.topic, run.kafka);
    let pid = std::process::id();
    let client = es::client(es_url, Duration::from_secs(120))?;
    let raw_index = format!("bench-raw-{pid}");
    // The raw baseline sends exactly the writes the indexer sends (same ids, same versions: the
    // real partition offsets), each partition in offset order, as a consumer's fetches deliver
    // them. Interleaving the partitions message by message is the stand-in's slow case (at 40k
    // commands it fell to a fifth of the rate), and would flatter the indexer.
    let mut records =
        dual_indexer::source::topics::read_all(kafka, topic, Duration::from_secs(120))?;
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
    let index = format!("bench-indexer-{pid}");
    let indexer = replay(o, brokers, es_url, topic, &index, kafka).await?;
    check_end_state(es_url, &index, &records).await?;
    es::request(&client, Method::Delete, &format!("/{index}"), None).await?;
    let raw_after = raw_rate(&client, &format!("{raw_index}-after"), &bodies, o).await?;
    let raw_rate = (raw_before + raw_after) / 2.0;

    println!(
        "raw bulk capacity        {raw_rate:.0} docs/s (mean of {raw_before:.0} before and {raw_after:.0} after the indexer)"
    );
    let rate = indexer.rate(o.count);
    println!("dual-indexer             {rate:.0} commands/s");
    println!("ratio                    {:.2}x", rate / raw_rate);
    println!(
        "first commit after       {:.1} s (start-up, group join, first bulk requests)",
        indexer.startup_secs
    );
    let steady = indexer.steady_rate(o.count);
    println!(
        "steady rate from then    {steady:.0} commands/s ({:.2}x raw)",
        steady / raw_rate
    );
    indexer.print_costs(o.count);
    Ok(())
}

/// The indexer through the whole backlog, with its peak memory: run with a small and a large
/// backlog to see that memory follows the in-flight budget, not the backlog.
async fn memory(run: &Run<'_>) -> anyhow::Result<()> {
    let (o, brokers, es_url, topic, kafka) =
        (run.options, run.brokers, run.es_url, run.topic, run.kafka);
    let index = format!("bench-rss-{}", std::process::id());
    let indexer = replay(o, brokers, es_url, topic, &index, kafka).await?;
    let records = dual_indexer::source::topics::read_all(kafka, topic, Duration::from_secs(120))?;
    check_end_state(es_url, &index, &records).await?;
    let client = es::client(es_url, Duration::from_secs(120))?;
    es::request(&client, Method::Delete, &format!("/{index}"), None).await?;
    println!(
        "dual-indexer             {:.0} commands/s",
        indexer.rate(o.count)
    );
    indexer.print_costs(o.count);
    Ok(())
}

/// The indexer's own ceiling: into the bench sink, against a bare consumer of the same topic
/// measured before and after it.
async fn ceiling(run: &Run<'_>) -> anyhow::Result<()> {
    let (o, brokers, es_url, topic, kafka) =
        (run.options, run.brokers, run.es_url, run.topic, run.kafka);
    let bare = |brokers: String, topic: String, count: usize| {
        tokio::task::spawn_blocking(move || bench_support::bare_consume(&brokers, &topic, count))
    };
    let bare_before = bare(brokers.into(), topic.into(), o.count).await??;
    let sink = bench_support::sink::start(es_url).await?;
    let index = format!("bench-sink-{}", std::process::id());
    let indexer = replay(o, brokers, &sink.url, topic, &index, kafka).await?;
    let actions = sink.answered.actions();
    anyhow::ensure!(
        actions == o.count as u64,
        "the sink answered {actions} writes for {} commands: every command must reach it exactly once",
        o.count
    );
    let client = es::client(es_url, Duration::from_secs(120))?;
    es::request(&client, Method::Delete, &format!("/{index}"), None).await?;
    let bare_after = bare(brokers.into(), topic.into(), o.count).await??;
    let bare_rate = 2.0 * o.count as f64 / (bare_before + bare_after).as_secs_f64();
    let rate = indexer.rate(o.count);
    println!(
        "bare consumer            {bare_rate:.0} messages/s (mean of {:.0} before and {:.0} after the indexer)",
        o.count as f64 / bare_before.as_secs_f64(),
        o.count as f64 / bare_after.as_secs_f64()
    );
    println!("dual-indexer             {rate:.0} commands/s into the bench sink");
    println!("ratio to bare consumer   {:.2}x", rate / bare_rate);
    println!(
        "bulk requests            {} ({actions} writes, every command once)",
        sink.answered
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    );
    indexer.print_costs(o.count);
    Ok(())
}

/// What one indexer run cost.
struct IndexerRun {
    secs: f64,
    /// When the first commit came, and how many commands it covered.
    startup_secs: f64,
    at_first: i64,
    cpu_secs: f64,
    peak_mb: f64,
}

impl IndexerRun {
    fn rate(&self, count: usize) -> f64 {
        count as f64 / self.secs
    }

    fn steady_rate(&self, count: usize) -> f64 {
        (count as i64 - self.at_first) as f64 / (self.secs - self.startup_secs).max(1e-3)
    }

    fn print_costs(&self, count: usize) {
        println!(
            "indexer CPU              {:.2} s ({:.1} us/command)",
            self.cpu_secs,
            self.cpu_secs * 1e6 / count as f64
        );
        println!("indexer peak RSS         {:.1} MB", self.peak_mb);
    }
}

/// Runs the release indexer on `topic` into `index` at `es_url` until the group's commits
/// reach the high watermarks, then stops it with SIGTERM and reads what it cost.
async fn replay(
    o: &Options,
    brokers: &str,
    es_url: &str,
    topic: &str,
    index: &str,
    kafka: &ClientConfig,
) -> anyhow::Result<IndexerRun> {
    let group_id = format!("{index}-group");
    let started = Instant::now();
    let child = spawn_indexer(o, brokers, es_url, topic, &group_id, index)?;
    let pid = child.id() as libc::pid_t;
    // The first commit comes after start-up (connecting, joining the group, the first fetch) and
    // the first bulk requests; the steady rate counts from there.
    let mut first_commit: Option<(f64, i64)> = None;
    // One long-lived client polls the group's commits: a new client per sample (as
    // `group::positions` makes) would load the broker the indexer reads from, which the raw
    // phases do not have to share.
    let watcher = CommitWatcher::new(kafka, &group_id, topic)?;
    loop {
        let committed = tokio::task::block_in_place(|| watcher.committed())?;
        if first_commit.is_none() && committed > 0 {
            first_commit = Some((started.elapsed().as_secs_f64(), committed));
        }
        if committed == watcher.high {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1800),
            "the indexer committed {committed} of {} in 30 minutes",
            watcher.high
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (startup_secs, at_first) = first_commit.unwrap_or((0.0, 0));
    let peak_mb = bench_support::proc_status_mb(pid as u32, "VmHWM");
    let (status, usage) = stop(pid);
    anyhow::ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the indexer did not exit cleanly: {status}"
    );
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(IndexerRun {
        secs,
        startup_secs,
        at_first,
        cpu_secs: cpu(usage.ru_utime) + cpu(usage.ru_stime),
        peak_mb,
    })
}

/// Fails unless `index` holds exactly the documents the tests' oracle computes from `records`
/// (the newest offset per id wins), and prints that it does.
async fn check_end_state(
    es_url: &str,
    index: &str,
    records: &[dual_indexer::source::topics::Record],
) -> anyhow::Result<()> {
    let mut records = records.to_vec();
    records.sort_by_key(|r| (r.partition, r.offset));
    let expected = support::oracle(&records, &Default::default(), support::Versions::Offset);
    support::assert_index_equals(es_url, index, &expected).await;
    println!(
        "end state                {} documents, equal to the oracle's",
        expected.len()
    );
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
        let committed = group::committed(
            &self.client,
            &self.topic,
            &self.partitions,
            Duration::from_secs(10),
        )?;
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
