//! The backfill benchmark, measured against the local stack in one run.
//!
//! 1. Writes a seeded corpus (default: 20k documents, 10 tags each) into a legacy-schema index on
//!    the legacy stand-in, the way the legacy indexer would.
//! 2. Measures the new stand-in's raw bulk capacity for the same documents: their new-schema
//!    bodies pre-built, `--batch` per request, `--in-flight` requests at once, into a fresh index.
//! 3. Runs the release `dual-indexer backfill` binary with `--slices 1`, then `--slices 4`, each
//!    into a fresh index, and times each run from spawn to exit.
//! 4. Checks that each copy holds exactly the documents the tests' oracle (`tests/support`)
//!    computes from the commands, and prints docs/s of each and its ratio to the raw capacity.
//!
//! ```text
//! scripts/stack.sh up && eval "$(scripts/stack.sh env)"
//! cargo build --release --bin dual-indexer
//! cargo run --release --example backfill_bench -- --docs 20000
//! ```

mod bench_support;
#[path = "../tests/support/oracle.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use dual_indexer::envelope::{Plan, Record, VersionSource};
use dual_indexer::es;
use dual_indexer::generate::{self, GeneratorSpec};
use dual_indexer::sink::{Batch, Provenance};
use dual_indexer::source::offsets::Ticket;
use dual_indexer::transform::Schema;
use elasticsearch::http::Method;
use elasticsearch::Elasticsearch;

struct Options {
    docs: usize,
    tags: usize,
    batch: usize,
    in_flight: usize,
    indexer: String,
}

fn options() -> Options {
    let mut o = Options {
        docs: 20_000,
        tags: 10,
        batch: 1_000,
        in_flight: 4,
        indexer: "target/release/dual-indexer".into(),
    };
    for flag in bench_support::flags() {
        match flag.name.as_str() {
            "--docs" => o.docs = flag.number(),
            "--tags" => o.tags = flag.number(),
            "--batch" => o.batch = flag.number(),
            "--in-flight" => o.in_flight = flag.number(),
            "--indexer" => o.indexer = flag.value.clone(),
            other => panic!(
                "unknown option {other}; accepted: --docs --tags --batch --in-flight --indexer"
            ),
        }
    }
    o
}

/// One upsert command per id `doc-000000`…, with the generator's tags and fields.
fn commands(o: &Options) -> Vec<Vec<u8>> {
    let messages = generate::messages(&GeneratorSpec {
        count: o.docs * 2,
        ids: o.docs,
        tags: o.tags,
        seed: 7,
        poison_every: 0,
    });
    let upserts: Vec<Vec<u8>> = messages
        .into_iter()
        .filter_map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).ok())
        .filter(|c| c["type"] == "upsert")
        .take(o.docs)
        .enumerate()
        .map(|(i, mut c)| {
            c["id"] = generate::doc_id(i).into();
            serde_json::to_vec(&c).expect("a command serialises")
        })
        .collect();
    assert_eq!(upserts.len(), o.docs, "the generator gave too few upserts");
    upserts
}

/// The commands' documents in `schema`, as `_bulk` bodies of `batch` documents.
fn bodies(commands: &[Vec<u8>], schema: Schema, batch: usize) -> Vec<Vec<u8>> {
    commands
        .chunks(batch)
        .map(|chunk| {
            let mut out = Batch::with_capacity(1 << 20, chunk.len());
            for (n, payload) in chunk.iter().enumerate() {
                let write = Plan::builtin(VersionSource::version_field())
                    .prepare(schema, &Record::new(payload, None, n as i64))
                    .expect("the corpus has no poison");
                let ticket = Ticket {
                    partition: 0,
                    offset: n as i64,
                    epoch: 0,
                };
                out.push(
                    write,
                    Provenance {
                        ticket,
                        key: None,
                        payload: &[],
                    },
                );
            }
            out.body().to_vec()
        })
        .collect()
}

async fn fresh_index(client: &Elasticsearch, index: &str, template: &str) -> anyhow::Result<()> {
    es::request(client, Method::Delete, &format!("/{index}"), None).await?;
    es::ensure_index(client, index, template).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = &options();
    let legacy_url = bench_support::env("LEGACY_ES_URL");
    let new_url = bench_support::env("NEW_ES_URL");
    let legacy = es::client(&legacy_url, Duration::from_secs(120))?;
    let new = es::client(&new_url, Duration::from_secs(120))?;
    let run = std::process::id();
    let commands = commands(o);

    let legacy_index = format!("bench-legacy-{run}");
    fresh_index(&legacy, &legacy_index, es::LEGACY_INDEX_TEMPLATE).await?;
    bench_support::raw_bulk(
        &legacy,
        &legacy_index,
        &bodies(&commands, Schema::Legacy, o.batch),
        o.in_flight,
    )
    .await?;
    es::refresh(&legacy, &legacy_index).await?;
    eprintln!(
        "legacy index {legacy_index}: {} documents",
        es::count(&legacy, &legacy_index).await?
    );

    let raw_index = format!("bench-raw-{run}");
    fresh_index(&new, &raw_index, es::NEW_INDEX_TEMPLATE).await?;
    let new_bodies = bodies(&commands, Schema::New, o.batch);
    let raw_secs = bench_support::raw_bulk(&new, &raw_index, &new_bodies, o.in_flight)
        .await?
        .as_secs_f64();
    es::request(&new, Method::Delete, &format!("/{raw_index}"), None).await?;
    let raw_rate = o.docs as f64 / raw_secs;
    eprintln!("raw bulk capacity: {raw_rate:.0} docs/s ({raw_secs:.2}s)");

    let expected = support::expected(
        &commands
            .iter()
            .map(|c| serde_json::from_slice(c))
            .collect::<Result<Vec<serde_json::Value>, _>>()?,
    );
    let mut rows = Vec::new();
    for slices in [1, 4] {
        let index = format!("bench-backfill-{slices}-{run}");
        fresh_index(&new, &index, es::NEW_INDEX_TEMPLATE).await?;
        let checkpoint = std::env::temp_dir().join(format!("backfill-bench-{run}-{slices}.json"));
        let dead_letters =
            std::env::temp_dir().join(format!("backfill-bench-{run}-{slices}.ndjson"));
        let started = Instant::now();
        let status = Command::new(&o.indexer)
            .args(["backfill", "--from-url", &legacy_url, "--from-index"])
            .args([&legacy_index, "--to-url", &new_url, "--to-index", &index])
            .args(["--slices", &slices.to_string(), "--batch-size"])
            .args([&o.batch.to_string(), "--log-level", "warn", "--checkpoint"])
            .arg(&checkpoint)
            .arg("--dead-letter-file")
            .arg(&dead_letters)
            .stdout(std::process::Stdio::null())
            .status()?;
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(status.success(), "backfill with {slices} slices: {status}");
        // Every document equal to the oracle's (the tests' own, from the commands), not only
        // their number.
        support::assert_index_equals(&new_url, &index, &expected).await;
        println!(
            "end state, {slices} slice{}   {} documents, equal to the oracle's",
            if slices == 1 { " " } else { "s" },
            expected.len()
        );
        es::request(&new, Method::Delete, &format!("/{index}"), None).await?;
        let _ = std::fs::remove_file(&checkpoint);
        let _ = std::fs::remove_file(&dead_letters);
        rows.push((slices, o.docs as f64 / secs, secs));
    }
    es::request(&legacy, Method::Delete, &format!("/{legacy_index}"), None).await?;

    println!("documents                {}", o.docs);
    println!(
        "raw bulk capacity        {raw_rate:.0} docs/s ({} per request, {} in flight)",
        o.batch, o.in_flight
    );
    for (slices, rate, secs) in rows {
        println!(
            "backfill, {slices} slice{}       {rate:.0} docs/s in {secs:.1} s: {:.2}x raw",
            if slices == 1 { " " } else { "s" },
            rate / raw_rate
        );
    }
    Ok(())
}
