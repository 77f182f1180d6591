//! The soak: long backlogs replayed end to end, with the indexer's memory sampled all the way.
//!
//! Two phases, each on a fresh 3-partition topic and a fresh index of the local stack:
//! 1. `--small` commands (default 1,000,000) with `--small-tags` tags each (default 3);
//! 2. `--wide` commands (default 200,000) with `--wide-tags` tags each (default 100).
//!
//! Each phase produces its whole backlog before the indexer starts, so the indexer meets all of it
//! at once. The release `dual-indexer run --until-caught-up` then replays it while this program
//! samples, every `--sample-ms`, the group's committed offsets and the indexer's resident memory
//! (`VmRSS`) and peak (`VmHWM`) from `/proc`. It prints the memory at every tenth of the backlog,
//! the peak, and the indexer's own summary, and fails if the indexer does not exit 0 or did not
//! account for every command, or if the index differs from the documents the tests' oracle
//! (`tests/support`) computes from the topic. If memory followed the backlog, the first tenth
//! (the whole backlog still ahead) would stand far above the last (almost nothing left).
//!
//! ```text
//! scripts/stack.sh up && eval "$(scripts/stack.sh env)"
//! cargo build --release --bin dual-indexer --example soak
//! target/release/examples/soak                       # 1M small, then 200k with 100 tags
//! target/release/examples/soak --small 100000 --wide 20000   # a quick look
//! ```

mod bench_support;
#[path = "../tests/support/oracle.rs"]
mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dual_indexer::es;
use dual_indexer::generate::{self, GeneratorSpec};
use dual_indexer::source::group;
use elasticsearch::http::Method;
use rdkafka::ClientConfig;

struct Options {
    small: usize,
    small_tags: usize,
    small_ids: usize,
    wide: usize,
    wide_tags: usize,
    wide_ids: usize,
    sample_ms: u64,
    indexer: String,
}

fn options() -> Options {
    let mut o = Options {
        small: 1_000_000,
        small_tags: 3,
        small_ids: 50_000,
        wide: 200_000,
        wide_tags: 100,
        wide_ids: 10_000,
        sample_ms: 500,
        indexer: "target/release/dual-indexer".into(),
    };
    for flag in bench_support::flags() {
        match flag.name.as_str() {
            "--small" => o.small = flag.number(),
            "--small-tags" => o.small_tags = flag.number(),
            "--small-ids" => o.small_ids = flag.number(),
            "--wide" => o.wide = flag.number(),
            "--wide-tags" => o.wide_tags = flag.number(),
            "--wide-ids" => o.wide_ids = flag.number(),
            "--sample-ms" => o.sample_ms = flag.number() as u64,
            "--indexer" => o.indexer = flag.value.clone(),
            other => panic!(
                "unknown option {other}; accepted: --small --small-tags --small-ids --wide --wide-tags --wide-ids --sample-ms --indexer"
            ),
        }
    }
    o
}

/// One phase of the soak.
struct Phase {
    name: &'static str,
    count: usize,
    tags: usize,
    ids: usize,
    seed: u64,
}

/// One memory sample, taken with the group's committed total at that moment.
struct Sample {
    at: Duration,
    committed: i64,
    rss_mb: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = options();
    let phases = [
        Phase {
            name: "small",
            count: o.small,
            tags: o.small_tags,
            ids: o.small_ids,
            seed: 31,
        },
        Phase {
            name: "wide",
            count: o.wide,
            tags: o.wide_tags,
            ids: o.wide_ids,
            seed: 32,
        },
    ];
    for phase in phases.iter().filter(|p| p.count > 0) {
        soak(&o, phase).await?;
    }
    Ok(())
}

async fn soak(o: &Options, phase: &Phase) -> anyhow::Result<()> {
    let brokers = bench_support::env("KAFKA_BROKERS");
    let es_url = bench_support::env("NEW_ES_URL");
    let run = std::process::id();
    let topic = format!("soak-{}-{run}", phase.name);
    let (index, group_id) = (topic.clone(), topic.clone());
    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", &brokers);

    dual_indexer::source::topics::ensure_topic(&kafka, &topic, 3).await?;
    let produced = Instant::now();
    let mut bytes = 0;
    // Produced in seeded chunks, so this program never holds the whole backlog either.
    let chunk = 100_000;
    for (n, start) in (0..phase.count).step_by(chunk).enumerate() {
        let messages = generate::messages(&GeneratorSpec {
            count: chunk.min(phase.count - start),
            ids: phase.ids,
            tags: phase.tags,
            seed: phase.seed * 1_000 + n as u64,
            poison_every: 0,
        });
        bytes += messages.iter().map(|m| m.payload.len()).sum::<usize>();
        generate::produce(&kafka, &topic, &messages).await?;
        eprintln!(
            "{}: produced {} of {}",
            phase.name,
            start + messages.len(),
            phase.count
        );
    }
    eprintln!(
        "{}: {} commands ({:.0} MB of payload) produced to {topic} in {:.0} s",
        phase.name,
        phase.count,
        bytes as f64 / 1e6,
        produced.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut child = Command::new(&o.indexer)
        .args(["run", "--brokers", &brokers, "--topic", &topic])
        .args(["--group", &group_id, "--es-url", &es_url, "--index", &index])
        .args(["--create-index", "--until-caught-up", "--log-level", "warn"])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let mut samples = Vec::new();
    let mut peak_mb = 0.0_f64;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let rss_mb = bench_support::proc_status_mb(pid, "VmRSS");
        let hwm = bench_support::proc_status_mb(pid, "VmHWM");
        if hwm.is_finite() {
            peak_mb = peak_mb.max(hwm);
        }
        let committed = group::positions(&kafka, &group_id, &topic)?
            .iter()
            .map(|p| p.committed.unwrap_or(0))
            .sum();
        // Before its first poll the child may not have exec'd yet (its RSS is then this
        // program's copy-on-write image, or nothing); samples start once it has started up.
        if rss_mb.is_finite() && committed > 0 {
            samples.push(Sample {
                at: started.elapsed(),
                committed,
                rss_mb,
            });
        }
        std::thread::sleep(Duration::from_millis(o.sample_ms));
    };
    let mut summary = String::new();
    child.stdout.take().unwrap().read_to_string(&mut summary)?;
    anyhow::ensure!(
        status.success(),
        "the indexer exited with {status}: {summary}"
    );
    anyhow::ensure!(
        summary.contains(&format!(" {} consumed", phase.count))
            && summary.contains(" 0 dead-lettered")
            && summary.contains(" 0 unfinished"),
        "the indexer did not account for all {} commands: {summary}",
        phase.count
    );
    report(phase, &samples, peak_mb, started.elapsed(), summary.trim());
    // The documents equal to what was produced, not only a count: the tests' own oracle.
    let mut records =
        dual_indexer::source::topics::read_all(&kafka, &topic, Duration::from_secs(300))?;
    records.sort_by_key(|r| (r.partition, r.offset));
    let expected = support::oracle(&records, &Default::default(), support::Versions::Offset);
    drop(records);
    support::assert_index_equals(&es_url, &index, &expected).await;
    println!(
        "end state: {} documents, equal to the oracle's",
        expected.len()
    );

    let client = es::client(&es_url, Duration::from_secs(120))?;
    es::request(&client, Method::Delete, &format!("/{index}"), None).await?;
    Ok(())
}

/// Prints the memory at each tenth of the backlog and the peak.
fn report(phase: &Phase, samples: &[Sample], peak_mb: f64, elapsed: Duration, summary: &str) {
    let count = phase.count as i64;
    println!();
    println!(
        "soak {}: {} commands, {} tags each, over {} ids",
        phase.name, phase.count, phase.tags, phase.ids
    );
    println!(
        "{:>9} {:>12} {:>10} {:>9}",
        "backlog", "committed", "RSS MB", "at s"
    );
    let mut next_tenth = 0;
    for s in samples {
        if s.committed * 10 >= next_tenth * count {
            println!(
                "{:>8}% {:>12} {:>10.1} {:>9.1}",
                100 - 10 * next_tenth.min(10),
                s.committed,
                s.rss_mb,
                s.at.as_secs_f64()
            );
            next_tenth = s.committed * 10 / count.max(1) + 1;
        }
    }
    let tenth = |lo: i64, hi: i64| {
        samples
            .iter()
            .filter(|s| s.committed * 10 >= lo * count && s.committed * 10 < hi * count)
            .map(|s| s.rss_mb)
            .fold(f64::NAN, f64::max)
    };
    let (first, last) = (tenth(0, 1), tenth(9, 11));
    println!(
        "peak RSS {peak_mb:.1} MB; highest RSS in the first tenth {first:.1} MB, in the last {last:.1} MB (last/first {:.2}); {:.0} commands/s",
        last / first,
        phase.count as f64 / elapsed.as_secs_f64()
    );
    println!("indexer: {summary}");
}
