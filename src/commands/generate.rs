//! `dual-indexer generate`: a seeded synthetic command stream (upserts, deletes, duplicates, stale
//! versions, poison), produced to a topic or printed.

use std::process::ExitCode;
use std::time::Instant;

use clap::Args;

use super::LOG_TARGET;
use crate::cli::{heading, KafkaArgs};
use crate::generate;
use crate::source::topics;

/// `dual-indexer generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten, next_help_heading = heading::KAFKA)]
    pub kafka: KafkaArgs,
    /// The topic to produce to; created with --partitions if missing.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands", help_heading = heading::KAFKA)]
    pub topic: String,
    /// Partitions of the topic, if it has to be created.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..), help_heading = heading::KAFKA)]
    pub partitions: i32,
    /// Number of messages.
    #[arg(long, default_value_t = 20_000)]
    pub count: usize,
    /// Number of distinct document ids.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub ids: u64,
    /// Tags per document (at most 1000; past the 18 built-in keys, the keys are numbered).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub tags: u64,
    /// Seed; the same seed gives the same stream.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Plant one poison message every N messages (0: none).
    #[arg(long, default_value_t = 500)]
    pub poison_every: usize,
    /// Print the messages as `key<TAB>payload` lines instead of producing them.
    #[arg(long)]
    pub stdout: bool,
    /// The message format: `builtin` (the built-in envelope) or `nested` (a producer's own format,
    /// read with `--config docs/examples/nested-mapping.toml`; see docs/envelope.md).
    #[arg(long, default_value = "builtin", value_parser = ["builtin", "nested"])]
    pub format: String,
}

/// Builds the stream from the seed, then produces it to `--topic` or prints it with `--stdout`.
pub async fn run(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let spec = generate::GeneratorSpec {
        count: args.count,
        ids: args.ids as usize,
        tags: args.tags as usize,
        seed: args.seed,
        poison_every: args.poison_every,
    };
    let mut messages = generate::messages(&spec);
    if args.format == "nested" {
        for m in &mut messages {
            m.payload = generate::nested::to_nested(&m.payload);
        }
    }
    let poison = messages.iter().filter(|m| m.poison.is_some()).count();
    if args.stdout {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for m in &messages {
            out.write_all(m.key.as_deref().unwrap_or("").as_bytes())?;
            out.write_all(b"\t")?;
            out.write_all(&m.payload)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let kafka = args.kafka.client_config()?;
    if topics::ensure_topic(&kafka, &args.topic, args.partitions).await? {
        tracing::info!(target: LOG_TARGET, topic = %args.topic, partitions = args.partitions, "created topic");
    }
    let started = Instant::now();
    generate::produce(&kafka, &args.topic, &messages).await?;
    println!(
        "produced {} messages ({poison} poison) for {} ids to `{}` in {:.1}s (seed {})",
        messages.len(),
        spec.ids,
        args.topic,
        started.elapsed().as_secs_f64(),
        spec.seed
    );
    Ok(ExitCode::SUCCESS)
}
