//! `dual-indexer dlq show`: what the dead-letter topic holds, counted by class, reason and
//! source partition, or entry by entry with their headers. Reads the topic without joining a
//! group and changes nothing.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{DlqTopicArgs, FilterArgs};
use crate::cli::{heading, KafkaArgs};
use crate::dlq::inspect::{Entry, Summary};
use crate::source::topics;

/// `dual-indexer dlq show`.
#[derive(Debug, Args)]
pub struct DlqShowArgs {
    #[command(flatten, next_help_heading = heading::KAFKA)]
    pub kafka: KafkaArgs,
    #[command(flatten, next_help_heading = heading::KAFKA)]
    pub topics: DlqTopicArgs,
    /// Print the entries (headers, key and payload) instead of the counts.
    #[arg(long, help_heading = heading::REPORT)]
    pub entries: bool,
    /// JSON: the counts as one object, or one object per entry with --entries.
    #[arg(long, help_heading = heading::REPORT)]
    pub json: bool,
    #[command(flatten, next_help_heading = heading::REPORT)]
    pub filter: FilterArgs,
    /// Seconds to read the topic for before giving up.
    #[arg(long, default_value_t = 120, help_heading = heading::REPORT)]
    pub timeout_secs: u64,
}

/// Runs `dlq show`.
pub async fn run(args: DlqShowArgs) -> anyhow::Result<ExitCode> {
    let topic = args.topics.name();
    let config = args.kafka.client_config()?;
    tracing::info!(topic = %topic, "reading the dead-letter topic up to its end");
    let timeout = Duration::from_secs(args.timeout_secs);
    let read = topic.clone();
    let records =
        tokio::task::spawn_blocking(move || topics::read_all(&config, &read, timeout)).await??;
    let filter = args.filter.filter();
    let entries: Vec<Entry> = records
        .iter()
        .map(Entry::from_record)
        .filter(|e| filter.admits(e))
        .collect();
    match (args.entries, args.json) {
        (true, true) => {
            for entry in &entries {
                println!("{}", serde_json::to_string(entry)?);
            }
        }
        (true, false) => {
            for e in &entries {
                println!(
                    "{}/{}  from {} {}/{}  {}{}  attempts {}{}\n  reason: {}\n  key: {}\n  payload: {}",
                    e.dlq_partition,
                    e.dlq_offset,
                    e.source_topic,
                    e.source_partition.map_or("?".into(), |p| p.to_string()),
                    e.source_offset.map_or("?".into(), |o| o.to_string()),
                    e.class,
                    e.es_type
                        .as_deref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default(),
                    e.attempts.map_or("?".into(), |a| a.to_string()),
                    e.truncated_from
                        .map(|n| format!("  payload cut from {n} bytes"))
                        .unwrap_or_default(),
                    e.reason,
                    e.key.as_deref().unwrap_or("(none)"),
                    e.payload
                );
            }
            println!("{} entr(ies)", entries.len());
        }
        (false, true) => println!("{}", serde_json::to_string(&Summary::of(&entries))?),
        (false, false) => print!("{}", Summary::of(&entries).render(&topic)),
    }
    Ok(ExitCode::SUCCESS)
}
