//! `dual-indexer envelope check`: read a sample of the command topic, apply the envelope mapping,
//! and print what each message would become, without writing anything anywhere. The first thing
//! to run against a real topic, before `run`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::cli::{heading, EnvelopeArgs, KafkaArgs};
use crate::envelope::{HeaderLookup, Plan, Record};
use crate::transform::{Op, Schema, Write};

/// `dual-indexer envelope …`.
#[derive(Debug, Subcommand)]
pub enum EnvelopeCommand {
    /// Read the first messages of the topic and print what each would become: the document and
    /// its version, a delete, or the dead-letter reason. Writes nothing and commits nothing.
    #[command(
        after_help = "Exit codes: 0 every sampled message would be applied, 1 some would be dead-lettered, 2 error.\n\nExamples:\n  dual-indexer envelope check --topic commands --sample 20\n  dual-indexer envelope check --config mapping.toml --sample 100 --json | jq 'select(.outcome == \"dead-letter\")'"
    )]
    Check(Box<EnvelopeCheckArgs>),
}

/// `dual-indexer envelope check`.
#[derive(Debug, Args)]
pub struct EnvelopeCheckArgs {
    #[command(flatten, next_help_heading = heading::KAFKA)]
    pub kafka: KafkaArgs,
    /// The command topic.
    #[arg(long, env = "DUAL_INDEXER_TOPIC", default_value = "commands", help_heading = heading::KAFKA)]
    pub topic: String,
    #[command(flatten, next_help_heading = heading::ENVELOPE)]
    pub envelope: EnvelopeArgs,
    /// The document shape to show: `new` (keyToValue tags) or `legacy`.
    #[arg(long, env = "DUAL_INDEXER_SCHEMA", default_value = "new", help_heading = heading::ES)]
    pub schema: Schema,
    /// How many messages to read, from the start of the partitions.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100_000), help_heading = heading::REPORT)]
    pub sample: u64,
    /// Start this many messages before each partition's end instead of at its start.
    #[arg(long, value_name = "N", help_heading = heading::REPORT)]
    pub from_end: Option<u64>,
    /// One JSON object per message instead of text.
    #[arg(long, help_heading = heading::REPORT)]
    pub json: bool,
    /// Seconds to wait for the sample before printing what arrived.
    #[arg(long, default_value_t = 120, help_heading = heading::REPORT)]
    pub timeout_secs: u64,
}

/// Runs `envelope check`.
pub async fn run(command: EnvelopeCommand) -> anyhow::Result<ExitCode> {
    let EnvelopeCommand::Check(args) = command;
    let plan = args
        .envelope
        .plan()
        .map_err(|e| anyhow::anyhow!("the envelope mapping: {e}"))?;
    if !args.json {
        println!("mapping: {}", plan.mapping());
    }
    let config = args.kafka.client_config()?;
    tokio::task::spawn_blocking(move || sample(&args, &config, &plan)).await?
}

/// What the sample held.
#[derive(Debug, Default)]
struct Tally {
    upserts: usize,
    deletes: usize,
    dead_letters: usize,
}

fn sample(
    args: &EnvelopeCheckArgs,
    config: &rdkafka::ClientConfig,
    plan: &Plan,
) -> anyhow::Result<ExitCode> {
    let consumer: BaseConsumer = config
        .clone()
        .set("group.id", "dual-indexer-envelope-check")
        .set("enable.auto.commit", "false")
        .create()?;
    let topic = &args.topic;
    tracing::info!(topic = %topic, "waiting for the topic's metadata from the broker");
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut list = TopicPartitionList::new();
    let mut ends = std::collections::HashMap::new();
    for p in metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic.as_str())
        .flat_map(|t| t.partitions())
    {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
        let start = args.from_end.map_or(low, |n| (high - n as i64).max(low));
        if high > start {
            ends.insert(p.id(), high);
            list.add_partition_offset(topic, p.id(), Offset::Offset(start))?;
        }
    }
    anyhow::ensure!(
        !metadata.topics().iter().all(|t| t.partitions().is_empty()),
        "topic `{topic}` has no partitions (does it exist?)"
    );
    let mut tally = Tally::default();
    if !ends.is_empty() {
        consumer.assign(&list)?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let mut seen = 0u64;
    while seen < args.sample && !ends.is_empty() && Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        if message.offset() + 1 >= ends.get(&message.partition()).copied().unwrap_or(0) {
            ends.remove(&message.partition());
        }
        seen += 1;
        show(args, plan, &message, &mut tally);
    }
    let summary = format!(
        "{seen} message(s): {} upsert(s), {} delete(s), {} would be dead-lettered",
        tally.upserts, tally.deletes, tally.dead_letters
    );
    if args.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    if seen < args.sample && !ends.is_empty() {
        eprintln!(
            "only {seen} of {} message(s) arrived within --timeout-secs {}",
            args.sample, args.timeout_secs
        );
    }
    Ok(if tally.dead_letters > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints what one message would become.
fn show(args: &EnvelopeCheckArgs, plan: &Plan, message: &BorrowedMessage<'_>, tally: &mut Tally) {
    let record = Record {
        payload: message.payload(),
        key: message.key(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        headers: message.headers().map(|h| h as &dyn HeaderLookup),
    };
    let origin = format!("{}/{}", message.partition(), message.offset());
    let outcome = plan.prepare(args.schema, &record);
    match &outcome {
        Ok(Write {
            op: Op::Index(_), ..
        }) => tally.upserts += 1,
        Ok(Write { op: Op::Delete, .. }) => tally.deletes += 1,
        Err(_) => tally.dead_letters += 1,
    }
    if args.json {
        let line = match outcome {
            Ok(write) => {
                let document = match &write.op {
                    Op::Index(source) => {
                        serde_json::from_slice(&source.to_json()).unwrap_or_default()
                    }
                    Op::Delete => serde_json::Value::Null,
                };
                json!({
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "outcome": if document.is_null() { "delete" } else { "upsert" },
                    "id": write.id,
                    "version": write.version,
                    "routing": write.routing,
                    "document": document,
                })
            }
            Err(rejection) => json!({
                "partition": message.partition(),
                "offset": message.offset(),
                "outcome": "dead-letter",
                "class": rejection.class(),
                "reason": rejection.to_string(),
            }),
        };
        println!("{line}");
        return;
    }
    match outcome {
        Ok(write) => {
            let routing = write
                .routing
                .as_deref()
                .map(|r| format!(" routing={r}"))
                .unwrap_or_default();
            match &write.op {
                Op::Index(source) => println!(
                    "{origin}  upsert  id={} version={}{routing}  {}",
                    write.id,
                    write.version,
                    String::from_utf8_lossy(&source.to_json())
                ),
                Op::Delete => println!(
                    "{origin}  delete  id={} version={}{routing}",
                    write.id, write.version
                ),
            }
        }
        Err(rejection) => println!("{origin}  dead-letter ({})  {rejection}", rejection.class()),
    }
}
